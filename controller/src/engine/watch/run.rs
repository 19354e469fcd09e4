//! The task of one live watch: every interval, a sample through the zone's
//! agent; the verdict recorded on the watch; the environment's channels told
//! about new conditions and recoveries. The task reads the watch from the
//! store each round, so a cancel (which also aborts it) or a restart loses
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::watch::WatchSampleSpec;

use super::assess::{self, conditions_of, Verdict};
use super::sample;
use crate::engine::leadership::is_fence_lost;
use crate::engine::{approved_sql, Controller};
use crate::notify::watch_event::{self, WatchChange, WatchNotice};
use crate::store::leases::Fence;
use crate::store::{AuditEntry, WatchProgress, WatchRecord};

/// Starts (or restarts) the task of `watch_id`, its records made under
/// the watches' lease `fence` (issue 18).
pub fn spawn(controller: Arc<Controller>, watch_id: String, fence: Option<Fence>) {
    let task = tokio::spawn(run(controller.clone(), watch_id.clone(), fence));
    controller.watches.track(&watch_id, task.abort_handle());
}

async fn run(controller: Arc<Controller>, watch_id: String, fence: Option<Fence>) {
    let mut next = tokio::time::Instant::now();
    let mut first = true;
    loop {
        let watch = match controller.store.watch(&watch_id).await {
            Ok(Some(watch)) => watch,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), watch_id = %watch_id, "reading the watch failed; it stops");
                return;
            }
        };
        let every = Duration::from_millis(watch.every_ms.max(1));
        if first {
            next += every;
            first = false;
        }
        let now = now_unix_ms();
        if watch.cancelled_at.is_some() {
            return;
        }
        let left = Duration::from_millis(u64::try_from(watch.ends_at - now).unwrap_or(0));
        if left.is_zero() {
            ended(&controller, &watch).await;
            return;
        }
        let wake = next.min(tokio::time::Instant::now() + left);
        tokio::time::sleep_until(wake).await;
        if wake < next {
            continue;
        }
        if sample_once(&controller, &watch, every, fence.as_ref()).await == Recorded::FenceLost {
            return;
        }
        next = (next + every).max(tokio::time::Instant::now());
    }
}

/// Whether a sample's verdict could be recorded.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    /// Recorded, or not for a reason the next round may not have (logged).
    Done,
    /// The store refused it: the watches' lease moved on, this task stops.
    FenceLost,
}

async fn sample_once(
    controller: &Controller,
    watch: &WatchRecord,
    every: Duration,
    fence: Option<&Fence>,
) -> Recorded {
    let mut spec = match WatchSampleSpec::try_from(watch.spec.clone()) {
        Ok(spec) => spec,
        Err(error) => {
            tracing::error!(watch_id = %watch.id, %error, "the stored watch is unreadable; it stops sampling");
            return Recorded::Done;
        }
    };
    let stored = std::mem::take(&mut spec.probes);
    // The plans the probes come from travel with them: an agent with an
    // [approvals] policy runs only a deployed plan's SQL (issue 19).
    (spec.probes, spec.sources) =
        approved_sql::watch_probes(controller, &watch.environment, &spec.names, stored)
            .await
            .unwrap_or_else(|error| {
                // Never the stored probes instead: in an environment that
                // requires approval only a deployed plan's SQL runs.
                tracing::error!(watch_id = %watch.id, error = %pgrollout_shared::errors::error_chain(&error), "reading the deployed plans failed; this sample runs no probe");
                (Vec::new(), Vec::new())
            });
    let taken = sample::take(
        controller,
        &watch.environment,
        &watch.procedure,
        &spec,
        Duration::ZERO,
        sample::sample_timeout(every),
    )
    .await;
    let (verdict, progress) = match taken {
        Ok(sample) => {
            let verdict = assess::assess_sample(watch, &sample);
            let calls_since: u64 =
                assess::compare(&watch.baseline, &sample, assess::Limits::of(watch))
                    .iter()
                    .map(|r| r.calls_since)
                    .sum();
            tracing::info!(
                watch_id = %watch.id,
                state = %verdict.state,
                calls_since_baseline = %calls_since,
                track_functions = %sample.track_functions,
                "watch sampled"
            );
            let progress = WatchProgress {
                sample: Some(sample),
                state: verdict.state.to_owned(),
                reason: verdict.reason.clone(),
                conditions: verdict.encoded_conditions(),
                probes_passed: verdict.probes_passed.clone(),
                failed_samples: 0,
                sample_error: String::new(),
            };
            (verdict, progress)
        }
        Err(error) => {
            let error = error.to_string();
            let failed = watch.failed_samples.saturating_add(1);
            tracing::warn!(watch_id = %watch.id, failed_in_a_row = failed, error = %error, "watch sample failed");
            let verdict = assess::assess_failed_attempt(watch, failed, &error);
            let progress = WatchProgress {
                sample: None,
                state: verdict.state.to_owned(),
                reason: verdict.reason.clone(),
                conditions: verdict.encoded_conditions(),
                probes_passed: verdict.probes_passed.clone(),
                failed_samples: failed,
                sample_error: error,
            };
            (verdict, progress)
        }
    };
    match controller
        .store
        .record_watch_progress(&watch.id, &progress, fence)
        .await
    {
        Ok(true) => announce(controller, watch, &verdict).await,
        // Cancelled while the sample ran: its verdict no longer matters.
        Ok(false) => {}
        Err(error) if is_fence_lost(&error) => {
            if let Some(fence) = fence {
                controller.fence_lost(fence);
            }
            return Recorded::FenceLost;
        }
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), watch_id = %watch.id, "recording a watch sample failed")
        }
    }
    Recorded::Done
}

/// Tells the channels (and the audit log) about conditions that just
/// opened, or that every open one cleared.
async fn announce(controller: &Controller, watch: &WatchRecord, verdict: &Verdict) {
    let before = conditions_of(watch);
    let opened = verdict.new_conditions(&before);
    let change = if opened.iter().any(|c| c.is_alert()) {
        WatchChange::Alert
    } else if !opened.is_empty() {
        WatchChange::Blind
    } else if verdict.conditions.is_empty() && !before.is_empty() {
        WatchChange::Recovered
    } else {
        return;
    };
    let (action, reason) = match change {
        WatchChange::Alert => ("watch.alert", verdict.reason.clone()),
        WatchChange::Blind => ("watch.blind", verdict.reason.clone()),
        // Name what recovered: each condition that was open, and what it said.
        WatchChange::Recovered => {
            let cleared: Vec<&str> = before.iter().map(|c| c.key.as_str()).collect();
            let verb = if cleared.len() == 1 { "is" } else { "are" };
            (
                "watch.recovered",
                format!(
                    "{} {verb} clear (was: {})",
                    cleared.join(", "),
                    watch.reason
                ),
            )
        }
    };
    tracing::warn!(watch_id = %watch.id, event = action, reason = %reason, "watch changed");
    controller
        .audit(AuditEntry {
            actor: "controller".into(),
            action: action.into(),
            outcome: verdict.state.into(),
            environment: Some(watch.environment.clone()),
            procedure: Some(watch.procedure.clone()),
            details: format!("watch {}: {reason}", watch.id),
            ..Default::default()
        })
        .await;
    controller
        .notifier
        .announce(watch_event::event(WatchNotice {
            change,
            watch_id: &watch.id,
            environment: &watch.environment,
            procedure: &watch.procedure,
            created_by: &watch.created_by,
            reason: &verdict.reason,
            created_at_unix_ms: watch.created_at,
        }));
}

/// The watch ran its course: audited once, by the task that saw it end.
async fn ended(controller: &Controller, watch: &WatchRecord) {
    tracing::info!(watch_id = %watch.id, state = %watch.state, "watch ended");
    controller
        .audit(AuditEntry {
            actor: "controller".into(),
            action: "watch.ended".into(),
            outcome: watch.state.clone(),
            environment: Some(watch.environment.clone()),
            procedure: Some(watch.procedure.clone()),
            details: format!(
                "watch {} ended after {} sample(s): {}",
                watch.id, watch.samples, watch.reason
            ),
            ..Default::default()
        })
        .await;
}
