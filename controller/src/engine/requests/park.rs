//! A request that cannot run now: parked for approvers, or scheduled for
//! its window — recorded, audited, announced, and its followers told. What
//! every other step of the lifecycle shares about a waiting request (its
//! updates, its trace, how it ends without running) lives here too, so the
//! steps depend on this file and never on each other.

use std::pin::Pin;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use futures_util::Stream;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{rollout_update, GateOutcome, RequestParked, RolloutUpdate};
use pgrollout_shared::traceparent::TraceParent;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::request_state;
use super::verdict::{check_with, GateCheck, OutsideWindow, ScheduledFor, Verdict};
use crate::engine::error::EngineError;
use crate::engine::rollout::RolloutRequest;
use crate::engine::updates::Update;
use crate::engine::{new_id, Controller};
use crate::store::{AuditEntry, PendingRollout};

/// A parked or scheduled request's updates, as a follower receives them.
pub type RequestUpdates = Pin<Box<dyn Stream<Item = Update> + Send>>;

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
    Parked(RequestUpdates),
}

/// Evaluates a deploy's gates: passed, or parked for approvals, or
/// scheduled for its window (refused with `--no-wait`); refusals are errors.
pub async fn gate(
    controller: &Arc<Controller>,
    request: &RolloutRequest,
    check: GateCheck<'_>,
    parked: Parked,
    options: ParkOptions,
) -> Result<Gated, EngineError> {
    let outside_window = if options.no_wait {
        OutsideWindow::Refuse
    } else {
        OutsideWindow::Schedule
    };
    let waiting = match check_with(controller, check, outside_window).await? {
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
) -> Result<RequestUpdates, EngineError> {
    let request_id = request_id_for(request);
    // Subscribed before the request exists, so nothing it does is missed.
    let updates = follow.then(|| controller.followers.follow(&request_id));
    let recorded = match waiting {
        Waiting::ForApprovals(waiting_for) if !follow => {
            return Err(park(controller, request, parked, &waiting_for).await)
        }
        Waiting::ForApprovals(waiting_for) => park_request(
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
        Err(error) => {
            controller.followers.end(&request_id);
            return Err(error);
        }
    };
    let first = tokio_stream::once(Ok(first));
    Ok(match updates {
        Some(updates) => Box::pin(first.chain(UnboundedReceiverStream::new(updates))),
        None => Box::pin(first),
    })
}

/// Records a new request that waits only for its window.
/// A signed request (issue 19) waits under the id its requester signed, so
/// the approvers' statements name the same request; others get a new id.
fn request_id_for(request: &RolloutRequest) -> String {
    if request.approvals.request_id.is_empty() {
        new_id("p")
    } else {
        request.approvals.request_id.clone()
    }
}

async fn schedule_new(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    when: &ScheduledFor,
    request_id: String,
) -> Result<RolloutUpdate, EngineError> {
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
            .await?;
        controller
            .store
            .add_signed_statements(
                &pending.request_id,
                request.approvals.signatures.clone(),
                now,
            )
            .await
    }
    .await;
    stored.map_err(EngineError::store("record the scheduled request"))?;
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
) -> Result<String, EngineError> {
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
        .map_err(EngineError::store("access its store"))?;
    if !moved {
        return Err(EngineError::Refused(format!(
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

pub fn unix_ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the request asked for besides the plan.
pub struct Parked {
    pub continue_on_error: bool,
    pub ticket: String,
    pub runbook: String,
    pub rollback_plan: String,
}

/// Parks a request that waits only for people; the returned error tells the
/// operator its id and what it waits for, and is one the CLI exits with its
/// own "awaiting approval" code for (nothing changed yet).
pub async fn park(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    waiting_for: &str,
) -> EngineError {
    match park_request(controller, request, parked, waiting_for, request_id_for(request)).await {
        Ok(pending) => EngineError::AwaitingApproval {
            message: format!(
                "request {} awaits approval and changed nothing yet ({waiting_for}); an approver runs \
                 `pgrollout approve {}`, and the last approval it needs starts the rollout (or schedules it for its window)",
                pending.request_id, pending.request_id
            ),
            request_id: pending.request_id,
        },
        Err(error) => error,
    }
}

/// Records the parked request under `request_id`, audits and notifies.
pub async fn park_request(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    waiting_for: &str,
    request_id: String,
) -> Result<PendingRollout, EngineError> {
    let pending = PendingRollout {
        request_id,
        environment: request.environment.clone(),
        plan: request.plan.clone(),
        actor: request.actor.clone(),
        trace_id: request.trace.trace_id.clone(),
        continue_on_error: parked.continue_on_error,
        ticket: parked.ticket,
        runbook: parked.runbook,
        rollback_plan: parked.rollback_plan,
        state: "awaiting_approval".into(),
        rollout_id: None,
    };
    let now = now_unix_ms();
    let stored = async {
        controller.store.save_plan(&pending.plan, now).await?;
        controller.store.park_rollout(&pending, now).await?;
        controller
            .store
            .add_signed_statements(
                &pending.request_id,
                request.approvals.signatures.clone(),
                now,
            )
            .await
    }
    .await;
    stored.map_err(EngineError::store("record the request"))?;
    controller
        .audit(AuditEntry {
            actor: pending.actor.clone(),
            action: "approval.requested".into(),
            outcome: "pending".into(),
            environment: Some(pending.environment.clone()),
            procedure: Some(pending.plan.label.clone()),
            trace_id: Some(pending.trace_id.clone()),
            details: format!(
                "request {} for plan {}: {waiting_for}",
                pending.request_id, pending.plan.plan_id
            ),
            ..Default::default()
        })
        .await;
    notify_approval_needed(controller, &pending);
    Ok(pending)
}

/// Tells the environment's channels that a request needs approvers.
pub fn notify_approval_needed(controller: &Controller, pending: &PendingRollout) {
    let approvals_required = controller
        .config
        .environments
        .get(&pending.environment)
        .map_or(1, |e| e.approvals);
    controller
        .notifier
        .approval_needed(crate::notify::ApprovalNeeded {
            rollout_id: pending.request_id.clone(),
            kind: "deploy".into(),
            environment: pending.environment.clone(),
            procedure: pending.plan.label.clone(),
            requested_by: pending.actor.clone(),
            plan_id: pending.plan.plan_id.clone(),
            commit_sha: pending.plan.commit_sha.clone(),
            trace_id: pending.trace_id.clone(),
            approvals_required,
        });
}

/// A request ended without running: followers hear why, then the end.
pub fn end_with(controller: &Controller, request_id: &str, state: &str, why: &str) {
    controller
        .followers
        .publish(request_id, parked_update(request_id, state, 0, "", why));
    controller.followers.end(request_id);
}

/// The request's trace, continued by a new span.
pub fn pending_trace(trace_id: &str) -> TraceParent {
    let mut trace = TraceParent::new_root();
    if TraceParent::parse(&format!("00-{trace_id}-{}-01", trace.span_id)).is_some() {
        trace.trace_id = trace_id.to_owned();
    }
    trace
}
