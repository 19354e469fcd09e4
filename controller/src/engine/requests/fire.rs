//! The scheduler: a task started by `serve` that starts scheduled requests
//! when their time comes. At that time every gate is evaluated again, with
//! the config in force: a request that lost an approval or its promotion
//! does not run (it waits for approvals again, or is refused); one whose
//! window is closed after all (a restart past the window, a changed window)
//! is rescheduled for the next opening; only one that passes them all runs.
//!
//! After a restart every scheduled request is evaluated once at once, so an
//! overdue one runs if its window is still open and is rescheduled if not,
//! and a request left `starting` by a crash is settled from the rollouts
//! table — never started twice.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;

use super::park::{end_with, notify_approval_needed, parked_update, pending_trace, unix_ms};
use super::request_state;
use super::start::{start_request, StartError};
use super::verdict::{self, GateCheck, Verdict};
use crate::engine::leader::Leader;
use crate::engine::Controller;
use crate::store::leases::{singleton, Fence};
use crate::store::{AuditEntry, Settle, Sweep};

/// When a request whose rollout could not start (no agent of the zone) is
/// tried again, while its window stays open.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long the leader sleeps at most on a store shared by controllers: a
/// request parked or rescheduled through another controller does not wake
/// this one's loop.
const SHARED_POLL: Duration = Duration::from_secs(5);

/// Runs until the process ends: the scheduler's loop, while this controller
/// holds the scheduler's lease (issue 18).
pub async fn run_scheduler(controller: Arc<Controller>, mut leader: Leader) {
    loop {
        let fence = leader.acquired(singleton::SCHEDULER).await;
        tracing::info!(token = fence.token, "the scheduler runs on this controller");
        lead(&controller, &mut leader, &fence).await;
        tracing::warn!(
            token = fence.token,
            "the scheduler is no longer the leader here: stopped"
        );
    }
}

/// The scheduler's loop under one hold of its lease; returns once it is
/// lost. A request being fired is finished first (its writes carry the
/// fence, so the store refuses them once another controller leads).
async fn lead(controller: &Arc<Controller>, leader: &mut Leader, fence: &Fence) {
    let mut everything = true;
    let mut generation = controller.config.generation();
    loop {
        if leader.fence(singleton::SCHEDULER).as_ref() != Some(fence) {
            return;
        }
        // A reloaded config may have moved a window: look at every request.
        let reloaded = controller.config.generation();
        everything |= reloaded != generation;
        generation = reloaded;
        let now = unix_ms(controller.clock.now());
        let ids = if everything {
            controller.store.requests_in(request_state::SCHEDULED).await
        } else {
            controller.store.due_requests(now).await
        };
        everything = false;
        match ids {
            Ok(ids) => {
                for id in ids {
                    if leader.fence(singleton::SCHEDULER).as_ref() != Some(fence) {
                        return;
                    }
                    fire(controller, &id, fence).await;
                }
            }
            Err(error) => {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "the scheduler could not read its store")
            }
        }
        // Registered before reading the next time, so a request scheduled in
        // between wakes this loop instead of being slept past.
        let changed = controller.schedule_changed.notified();
        let next = controller.store.next_run_at().await.ok().flatten();
        let clock = controller.clock.clone();
        let shared = controller.store.shared_by_controllers();
        let sleep = async move {
            match next {
                Some(at) => clock.sleep_until(from_unix_ms(at)).await,
                // Nothing scheduled: only a new request wakes the loop (and
                // a periodic look, in case the store was written otherwise).
                None => {
                    clock
                        .sleep_until(clock.now() + Duration::from_secs(300))
                        .await
                }
            }
        };
        let poll = async move {
            if shared {
                tokio::time::sleep(SHARED_POLL).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = changed => {}
            _ = poll => {}
            _ = leader.lost(fence) => return,
        }
    }
}

/// Evaluates one scheduled request now and acts on the verdict.
async fn fire(controller: &Arc<Controller>, request_id: &str, fence: &Fence) {
    let store = &controller.store;
    let loaded = async {
        let pending = store.pending_rollout(request_id).await?;
        let schedule = store.request_schedule(request_id).await?;
        let approvals = match &pending {
            Some(p) => store.request_approvals(request_id, &p.plan.plan_id).await?,
            None => Vec::new(),
        };
        Ok::<_, crate::store::StoreError>((pending, schedule, approvals))
    }
    .await;
    let (pending, schedule, approvals) = match loaded {
        Ok((Some(pending), Some(schedule), approvals)) => (pending, schedule, approvals),
        Ok(_) => return,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), request_id, "the scheduler could not read a request");
            return;
        }
    };
    if pending.state != request_state::SCHEDULED {
        return;
    }
    // At its time the request is dry-run like any other deploy.
    let trace = pending_trace(&pending.trace_id);
    let check = GateCheck::of_pending(&pending, &approvals, &trace);
    let audit = |action: &str, outcome: &str, details: String| AuditEntry {
        actor: "scheduler".into(),
        action: action.into(),
        outcome: outcome.into(),
        rollout_id: Some(request_id.to_owned()),
        environment: Some(pending.environment.clone()),
        procedure: Some(pending.plan.label.clone()),
        trace_id: Some(pending.trace_id.clone()),
        details,
    };
    let now = now_unix_ms();
    match verdict::check(controller, check).await {
        Err(error) if error.is_internal() => {
            // The controller, not the request, is at fault: try again soon.
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), request_id,
                "the scheduler could not evaluate a request's gates; trying again soon");
            let retry = unix_ms(controller.clock.now() + RETRY_AFTER);
            let _ = store
                .reschedule_request_fenced(
                    request_id,
                    &[request_state::SCHEDULED],
                    retry,
                    &schedule.window,
                    &error.to_string(),
                    Some(fence),
                )
                .await;
        }
        Err(refusal) => {
            let reason = format!("a gate refused it when its time came: {refusal}");
            if let Ok(true) = store
                .move_request_fenced(
                    request_id,
                    &[request_state::SCHEDULED],
                    request_state::REFUSED,
                    None,
                    &reason,
                    now,
                    Some(fence),
                )
                .await
            {
                tracing::warn!(request_id, reason = %refusal, "scheduled request refused at its time");
                controller
                    .audit(audit("rollout.fire_refused", "refused", reason.clone()))
                    .await;
                end_with(controller, request_id, request_state::REFUSED, &reason);
            }
        }
        Ok(Verdict::AwaitingApproval(waiting_for)) => {
            let note = format!("waits for approvals again: {waiting_for}");
            if let Ok(true) = store
                .move_request_fenced(
                    request_id,
                    &[request_state::SCHEDULED],
                    request_state::AWAITING_APPROVAL,
                    None,
                    &note,
                    now,
                    Some(fence),
                )
                .await
            {
                controller
                    .audit(audit("rollout.fire_refused", "pending", note.clone()))
                    .await;
                notify_approval_needed(controller, &pending);
                controller.followers.publish(
                    request_id,
                    parked_update(request_id, request_state::AWAITING_APPROVAL, 0, "", &note),
                );
            }
        }
        Ok(Verdict::Scheduled(when)) => {
            let run_at = unix_ms(when.run_at);
            if schedule.run_at == Some(run_at) && schedule.window == when.window {
                return;
            }
            let note =
                "the window was closed at its time; rescheduled for its next opening".to_owned();
            if let Ok(true) = store
                .reschedule_request_fenced(
                    request_id,
                    &[request_state::SCHEDULED],
                    run_at,
                    &when.window,
                    &note,
                    Some(fence),
                )
                .await
            {
                let details = format!(
                    "request {request_id} now runs at {} (window {})",
                    pgrollout_shared::tls::format_utc(when.run_at),
                    when.window
                );
                controller
                    .audit(audit("rollout.rescheduled", "pending", details))
                    .await;
                controller.followers.publish(
                    request_id,
                    parked_update(
                        request_id,
                        request_state::SCHEDULED,
                        run_at,
                        &when.window,
                        &note,
                    ),
                );
            }
        }
        Ok(Verdict::Passed(passed)) => {
            let agent_wait = controller.config.deployment.max_agent_wait;
            match start_request(
                controller.clone(),
                pending.clone(),
                passed,
                request_state::SCHEDULED,
                request_state::STARTED,
                agent_wait,
                Some(fence),
            )
            .await
            {
                Ok(rollout_id) => {
                    let details = format!(
                        "request {request_id} started as rollout {rollout_id}; window {}",
                        schedule.window
                    );
                    tracing::info!(request_id, rollout_id = %rollout_id, "scheduled request fired");
                    let mut entry = audit("rollout.fired", "ok", details);
                    entry.actor = pending.actor.clone();
                    controller.audit(entry).await;
                }
                Err(StartError::NotClaimed(_)) => {}
                Err(StartError::Failed(error)) => {
                    let why = error.to_string();
                    retry_later(controller, request_id, &schedule.window, &why, fence).await;
                    let attempts = store.count_start_attempt(request_id).await.unwrap_or(0);
                    if attempts == 1 {
                        let details = format!(
                            "request {request_id} could not start ({why}); retried every {} while its window is open",
                            humantime::format_duration(RETRY_AFTER)
                        );
                        controller
                            .audit(audit("rollout.fire_delayed", "failed", details))
                            .await;
                    }
                }
            }
        }
    }
}

/// The rollout could not start: the request stays scheduled and is tried
/// again shortly (its gates, the window included, evaluated again then).
async fn retry_later(
    controller: &Controller,
    request_id: &str,
    window: &str,
    why: &str,
    fence: &Fence,
) {
    tracing::warn!(request_id, reason = %why, "scheduled request could not start; retrying");
    let retry = unix_ms(controller.clock.now() + RETRY_AFTER);
    let note = format!("the last start attempt failed: {why}");
    let _ = controller
        .store
        .reschedule_request_fenced(
            request_id,
            &[request_state::SCHEDULED],
            retry,
            window,
            &note,
            Some(fence),
        )
        .await;
    controller.followers.publish(
        request_id,
        parked_update(request_id, request_state::SCHEDULED, retry, window, &note),
    );
}

/// Requests a crash left `starting`: if a rollout with the request's trace
/// exists, the request became it; if not, nothing was offered (the rollout
/// is recorded before its job is offered), and the request is scheduled
/// again, to be evaluated now. Run at start-up (`recovery.rs`, before this
/// controller starts anything) and by each heartbeat's sweep
/// (`liveness.rs`). On a shared store only the requests whose starter is
/// dead — or this controller's previous life, at start — are settled: a
/// live controller is still starting its own (`store/controllers.rs`).
pub async fn settle_interrupted_starts(controller: &Controller, which: Settle) {
    let store = &controller.store;
    let ids = match controller.identity.get() {
        Some(me) if store.shared_by_controllers() => {
            let sweep = Sweep {
                me: me.id.clone(),
                which,
                now: now_unix_ms(),
                dead_after_ms: crate::engine::identity::dead_after_ms(),
            };
            store.orphaned_starts(&sweep).await
        }
        // One controller (SQLite): every request left starting was its
        // previous life's, and it only settles them at start.
        _ if which == Settle::DeadOnly => return,
        _ => store.requests_in(request_state::STARTING).await,
    };
    let Ok(ids) = ids else {
        return;
    };
    for id in ids {
        let Ok(Some(pending)) = store.pending_rollout(&id).await else {
            continue;
        };
        let schedule = store
            .request_schedule(&id)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let now = now_unix_ms();
        match store
            .rollout_with_trace(&pending.trace_id, schedule.created_at)
            .await
        {
            Ok(Some(rollout_id)) => {
                let note = "settled after its controller stopped";
                let _ = store
                    .move_request(
                        &id,
                        &[request_state::STARTING],
                        request_state::STARTED,
                        Some(&rollout_id),
                        note,
                        now,
                    )
                    .await;
                tracing::info!(request_id = %id, rollout_id = %rollout_id, "interrupted start settled: the rollout exists");
            }
            Ok(None) => {
                let note = "its controller stopped while starting it; nothing was offered, evaluated again";
                let _ = store
                    .reschedule_request(
                        &id,
                        &[request_state::STARTING],
                        unix_ms(controller.clock.now()),
                        &schedule.window,
                        note,
                    )
                    .await;
                controller.schedule_changed.notify_one();
                tracing::info!(request_id = %id, "interrupted start settled: scheduled again");
            }
            Err(error) => {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), request_id = %id, "settling an interrupted start failed")
            }
        }
    }
}

fn from_unix_ms(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
