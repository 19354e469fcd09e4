//! Deploy requests that are not rollouts yet (DESIGN §3: `awaiting_approval
//! → scheduled → running`). A request (`p-…`) waits for approvals, then for
//! its window; it becomes a rollout when the last approval comes in inside
//! the window, or when the scheduler finds its window open — re-evaluating
//! every gate first. It can be cancelled until then.
//!
//! Whoever starts a request first claims it (`starting`, compare-and-set),
//! so a cancel, an approval and the scheduler can never start it twice or
//! start a cancelled one.

mod cancel;
mod fire;
mod follow;
#[cfg(test)]
mod tests;
mod view;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use pgrollout_shared::job::{now_unix_ms, BatchOptions, JobKind};
use pgrollout_shared::proto::{rollout_update, GateOutcome, RequestParked, RolloutUpdate};
use pgrollout_shared::routine::routines_from_wire;
use pgrollout_shared::traceparent::TraceParent;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::Status;

pub use cancel::cancel;
pub use fire::{end_with, run_scheduler};
pub use follow::follow;
pub use view::{list_with_requests, request_status};

use super::approvals::{self, Parked};
use super::control::UpdateStream;
use super::gates::{self, GateCheck, OutsideWindow, ScheduledFor, Verdict};
use crate::engine::rollout::{self, RolloutRequest};
use crate::engine::{new_id, Controller};
use crate::plan::deploy_order;
pub use crate::store::request_state;
use crate::store::{AuditEntry, PendingRollout};

/// What the deploy asked for when it cannot run right now.
pub struct ParkOptions {
    /// Refuse instead of scheduling for the window.
    pub no_wait: bool,
    /// Keep the stream open until the rollout ran.
    pub follow: bool,
}

/// A deploy request after its gates.
pub enum Gated {
    /// Dispatch now, recording these verdicts.
    Passed(Vec<GateOutcome>),
    /// Parked or scheduled: the response stream to return.
    Parked(UpdateStream),
}

/// Evaluates a deploy's gates: passed, or parked for approvals, or
/// scheduled for its window (refused with `--no-wait`); refusals are errors.
pub async fn gate(
    controller: &Arc<Controller>,
    request: &RolloutRequest,
    check: GateCheck<'_>,
    parked: Parked,
    options: ParkOptions,
) -> Result<Gated, Status> {
    let outside_window = if options.no_wait {
        OutsideWindow::Refuse
    } else {
        OutsideWindow::Schedule
    };
    let waiting = match gates::check_with(controller, check, outside_window).await? {
        Verdict::Passed(passed) => return Ok(Gated::Passed(passed)),
        Verdict::AwaitingApproval(waiting_for) => Waiting::ForApprovals(waiting_for),
        Verdict::Scheduled(when) => Waiting::ForWindow(when),
    };
    park_or_schedule(controller, request, parked, waiting, options.follow)
        .await
        .map(Gated::Parked)
}

/// What a deploy whose gates did not all pass becomes.
pub enum Waiting {
    /// Approvals (and perhaps then a window) are missing.
    ForApprovals(String),
    /// Only the window is closed.
    ForWindow(ScheduledFor),
}

/// Parks or schedules a deploy request. Scheduled: the stream carries the
/// request and its time (and, with `follow`, everything after). Awaiting
/// approval: refused with the request id (exit 1, as before), unless the
/// operator follows it.
pub async fn park_or_schedule(
    controller: &Arc<Controller>,
    request: &RolloutRequest,
    parked: Parked,
    waiting: Waiting,
    follow: bool,
) -> Result<UpdateStream, Status> {
    let request_id = new_id("p");
    // Subscribed before the request exists, so nothing it does is missed.
    let updates = follow.then(|| controller.followers.follow(&request_id));
    let recorded = match waiting {
        Waiting::ForApprovals(waiting_for) if !follow => {
            return Err(approvals::park(controller, request, parked, &waiting_for).await)
        }
        Waiting::ForApprovals(waiting_for) => approvals::park_request(
            controller,
            request,
            parked,
            &waiting_for,
            request_id.clone(),
        )
        .await
        .map(|pending| {
            parked_update(
                &pending.request_id,
                request_state::AWAITING_APPROVAL,
                0,
                "",
                &waiting_for,
            )
        }),
        Waiting::ForWindow(when) => {
            schedule_new(controller, request, parked, &when, request_id.clone()).await
        }
    };
    let first = match recorded {
        Ok(first) => first,
        Err(status) => {
            controller.followers.end(&request_id);
            return Err(status);
        }
    };
    let first = tokio_stream::once(Ok(first));
    Ok(match updates {
        Some(updates) => Box::pin(first.chain(UnboundedReceiverStream::new(updates))),
        None => Box::pin(first),
    })
}

/// Records a new request that waits only for its window.
async fn schedule_new(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    when: &ScheduledFor,
    request_id: String,
) -> Result<RolloutUpdate, Status> {
    let (continue_on_error, ticket, runbook, rollback_plan) = (
        parked.continue_on_error,
        parked.ticket,
        parked.runbook,
        parked.rollback_plan,
    );
    let pending = PendingRollout {
        request_id,
        environment: request.environment.clone(),
        plan: request.plan.clone(),
        actor: request.actor.clone(),
        trace_id: request.trace.trace_id.clone(),
        continue_on_error,
        ticket,
        runbook,
        rollback_plan,
        state: request_state::SCHEDULED.into(),
        rollout_id: None,
    };
    let now = now_unix_ms();
    let run_at = unix_ms(when.run_at);
    let stored = async {
        controller.store.save_plan(&pending.plan, now).await?;
        controller
            .store
            .schedule_request(&pending, run_at, &when.window, now)
            .await
    }
    .await;
    if let Err(error) = stored {
        tracing::error!(error = %anyhow::Error::from(error), "scheduling a request failed");
        return Err(Status::internal(
            "the controller could not record the scheduled request; see its log",
        ));
    }
    audit_scheduled(controller, &pending, when, "rollout.scheduled").await;
    controller.schedule_changed.notify_one();
    Ok(parked_update(
        &pending.request_id,
        request_state::SCHEDULED,
        run_at,
        &when.window,
        &scheduled_hint(&pending.request_id),
    ))
}

/// The last approval came in outside the window: the request waits for it.
pub async fn schedule_approved(
    controller: &Controller,
    pending: &PendingRollout,
    when: &ScheduledFor,
) -> Result<String, Status> {
    let moved = controller
        .store
        .reschedule_request(
            &pending.request_id,
            &[request_state::AWAITING_APPROVAL],
            unix_ms(when.run_at),
            &when.window,
            "",
        )
        .await
        .map_err(store_failure)?;
    if !moved {
        return Err(Status::failed_precondition(format!(
            "request {} is no longer awaiting approval",
            pending.request_id
        )));
    }
    audit_scheduled(controller, pending, when, "rollout.scheduled").await;
    controller.schedule_changed.notify_one();
    controller.followers.publish(
        &pending.request_id,
        parked_update(
            &pending.request_id,
            request_state::SCHEDULED,
            unix_ms(when.run_at),
            &when.window,
            &scheduled_hint(&pending.request_id),
        ),
    );
    Ok(format!(
        "approval recorded; {}",
        scheduled_message(&pending.request_id, when)
    ))
}

/// `scheduled: request p-… runs at 2026-11-28 02:00:00 UTC (window …)`.
fn scheduled_message(request_id: &str, when: &ScheduledFor) -> String {
    format!(
        "scheduled: request {request_id} runs at {} (window {}); {}",
        pgrollout_shared::tls::format_utc(when.run_at),
        when.window,
        scheduled_hint(request_id)
    )
}

/// What the operator can do with a scheduled request.
fn scheduled_hint(request_id: &str) -> String {
    format!(
        "nothing changed yet — `pgrollout status {request_id}` shows it, `pgrollout cancel {request_id}` \
         cancels it, `pgrollout status {request_id} --follow` follows it"
    )
}

async fn audit_scheduled(
    controller: &Controller,
    pending: &PendingRollout,
    when: &ScheduledFor,
    action: &str,
) {
    controller
        .audit(AuditEntry {
            actor: pending.actor.clone(),
            action: action.into(),
            outcome: "pending".into(),
            rollout_id: Some(pending.request_id.clone()),
            environment: Some(pending.environment.clone()),
            procedure: Some(pending.plan.label.clone()),
            trace_id: Some(pending.trace_id.clone()),
            details: format!(
                "request {} for plan {} runs at {} (window {})",
                pending.request_id,
                pending.plan.plan_id,
                pgrollout_shared::tls::format_utc(when.run_at),
                when.window
            ),
        })
        .await;
}

/// Why a request did not start.
pub enum StartError {
    /// Someone else moved it first (cancelled, started): its state now.
    NotClaimed(String),
    /// Claimed, but the rollout could not start (no agent, say); the request
    /// is back where it was.
    Failed(Status),
}

impl StartError {
    pub fn into_status(self) -> Status {
        match self {
            StartError::NotClaimed(message) => Status::failed_precondition(message),
            StartError::Failed(status) => status,
        }
    }
}

/// Claims the request (from `from`), starts its rollout, and marks it `done`
/// with the rollout's id. The rollout runs in the background; its updates go
/// to the request's followers.
pub async fn start_request(
    controller: Arc<Controller>,
    pending: PendingRollout,
    gates: Vec<GateOutcome>,
    from: &str,
    done: &str,
    agent_wait: Duration,
) -> Result<String, StartError> {
    let id = pending.request_id.clone();
    let claimed = controller
        .store
        .move_request(
            &id,
            &[from],
            request_state::STARTING,
            None,
            "",
            now_unix_ms(),
        )
        .await
        .map_err(|e| StartError::Failed(store_failure(e)))?;
    if !claimed {
        let now = controller.store.pending_rollout(&id).await.ok().flatten();
        let state = now.map_or_else(|| "gone".to_owned(), |p| p.state);
        return Err(StartError::NotClaimed(format!(
            "request {id} is already {state}"
        )));
    }
    let started = match rollout_request(&pending, gates, agent_wait) {
        Ok(request) => rollout::start(controller.clone(), request).await,
        Err(status) => Err(status),
    };
    let mut receiver = match started {
        Ok(receiver) => receiver,
        Err(status) => {
            // Nothing was offered: the request is back as it was.
            let _ = controller
                .store
                .move_request(
                    &id,
                    &[request_state::STARTING],
                    from,
                    None,
                    status.message(),
                    now_unix_ms(),
                )
                .await;
            return Err(StartError::Failed(status));
        }
    };
    let mut rollout_id = String::new();
    if let Some(Ok(update)) = receiver.recv().await {
        if let Some(rollout_update::Body::Started(started)) = &update.body {
            rollout_id = started.rollout_id.clone();
        }
        controller.followers.publish(&id, update);
    }
    let recorded = controller
        .store
        .move_request(
            &id,
            &[request_state::STARTING],
            done,
            Some(&rollout_id),
            "",
            now_unix_ms(),
        )
        .await;
    // Nobody need stream this rollout: drain it to its end for followers.
    let drain = controller.clone();
    let drained_id = id.clone();
    tokio::spawn(async move {
        while let Some(update) = receiver.recv().await {
            if let Ok(update) = update {
                drain.followers.publish(&drained_id, update);
            }
        }
        drain.followers.end(&drained_id);
    });
    match recorded {
        Ok(_) => Ok(rollout_id),
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), request_id = %id, rollout_id = %rollout_id, "recording a started request failed");
            Err(StartError::Failed(Status::internal(format!(
                "rollout {rollout_id} started but request {id} could not be marked so; see the controller's log"
            ))))
        }
    }
}

/// The rollout a request becomes: its plan, ordered by the controller, in
/// the request's trace.
fn rollout_request(
    pending: &PendingRollout,
    gates: Vec<GateOutcome>,
    agent_wait: Duration,
) -> Result<RolloutRequest, Status> {
    let routines = routines_from_wire(pending.plan.routines.clone())
        .map_err(|e| Status::internal(e.to_string()))?;
    let order = deploy_order(routines).map_err(|e| Status::failed_precondition(e.to_string()))?;
    let view = Some(order.view());
    let trace = TraceParent::parse(&format!("00-{}-00f067aa0ba902b7-01", pending.trace_id))
        .unwrap_or_else(TraceParent::new_root);
    Ok(RolloutRequest {
        environment: pending.environment.clone(),
        plan: pending.plan.clone(),
        kind: JobKind::Deploy {
            routines: order.routines,
            batch: BatchOptions {
                continue_on_error: pending.continue_on_error,
                dependencies: order.dependencies,
                // The environment's after-deploy steps are set where every
                // rollout starts (`engine::after_deploy`).
                ..Default::default()
            },
        },
        actor: pending.actor.clone(),
        trace,
        agent_wait,
        gates,
        order: view,
    })
}

/// A parked request as the stream carries it.
pub fn parked_update(
    request_id: &str,
    state: &str,
    run_at_unix_ms: i64,
    window: &str,
    message: &str,
) -> RolloutUpdate {
    RolloutUpdate {
        body: Some(rollout_update::Body::Parked(RequestParked {
            request_id: request_id.to_owned(),
            state: state.to_owned(),
            run_at_unix_ms,
            window: window.to_owned(),
            message: message.to_owned(),
        })),
    }
}

fn unix_ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn store_failure(error: crate::store::StoreError) -> Status {
    tracing::error!(error = %anyhow::Error::from(error), "request store access failed");
    Status::internal("the controller could not access its store; see its log")
}
