//! Scheduled drift scans (issue 20): every environment with a
//! `drift_scan_interval` is scanned that often, through the same path as an
//! operator's `pgrollout drift` (`drift::scan_and_record`), so a hand change
//! made at 3 a.m. is audited and notified as `drift.detected` without anyone
//! asking. The settings are read on every tick, so a config reload adds,
//! changes or stops an environment's scans.
//!
//! A scan that cannot run (no agent connected, the agent failed) is logged
//! and tried again at the next interval: an unreachable zone is already
//! visible in `pgrollout agents`, and repeating that in the audit log every
//! interval would drown it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::drift;
use super::error::EngineError;
use super::leader::is_fence_lost;
use super::Controller;
use crate::store::leases::{singleton, Fence};

/// How often the schedule looks at the settings.
const TICK: Duration = Duration::from_millis(250);

/// Who the audit log names for a scheduled scan.
pub const SCHEDULE_ACTOR: &str = "controller (drift_scan_interval)";

/// Runs while this controller holds the drift lease (issue 18), aborted
/// when it is lost; the scans in progress are aborted with it (they are
/// this task's), and each scan is recorded under the lease's fence: one the
/// store refuses for it stops the schedule here.
pub async fn run(controller: Arc<Controller>) {
    let Some(fence) = controller.lease_fence(singleton::DRIFT) else {
        return;
    };
    // When each environment's next scan is due; a scan in progress has no
    // entry, so it is never started twice.
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    let mut running: Vec<String> = Vec::new();
    let mut scans: JoinSet<(String, Scanned)> = JoinSet::new();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(Ok((finished, scanned))) = scans.join_next() => {
                running.retain(|environment| *environment != finished);
                if scanned == Scanned::FenceLost {
                    controller.fence_lost(&fence);
                    return;
                }
            }
        }
        let config = controller.config.get();
        let now = Instant::now();
        due.retain(|environment, _| {
            config
                .environments
                .get(environment)
                .is_some_and(|e| e.drift_scan_interval.is_some())
        });
        for (environment, settings) in &config.environments {
            let Some(every) = settings.drift_scan_interval else {
                continue;
            };
            if running.contains(environment) {
                continue;
            }
            let next = *due.entry(environment.clone()).or_insert(now + every);
            // A shorter interval after a reload takes effect at once.
            if next > now + every {
                due.insert(environment.clone(), now + every);
                continue;
            }
            if next > now {
                continue;
            }
            due.insert(environment.clone(), now + every);
            running.push(environment.clone());
            let (controller, environment, fence) =
                (controller.clone(), environment.clone(), fence.clone());
            scans.spawn(async move {
                let scanned = scan(&controller, &environment, &fence).await;
                (environment, scanned)
            });
        }
    }
}

/// How a scheduled scan ended, for the schedule.
#[derive(Debug, PartialEq, Eq)]
enum Scanned {
    /// Recorded, or failed in a way the next interval may not (logged).
    Done,
    /// The store refused its record: the drift lease moved on.
    FenceLost,
}

async fn scan(controller: &Controller, environment: &str, fence: &Fence) -> Scanned {
    match drift::scan_and_record(
        controller,
        environment,
        Vec::new(),
        drift::Requester::Schedule(SCHEDULE_ACTOR, fence),
    )
    .await
    {
        Ok(response) => {
            let findings = response.report.map_or(0, |r| r.findings.len());
            tracing::debug!(
                environment,
                findings,
                new = response.new_drift.len(),
                "scheduled drift scan"
            );
        }
        Err(EngineError::Store { source, .. }) if is_fence_lost(&source) => {
            return Scanned::FenceLost;
        }
        Err(error) => {
            tracing::warn!(environment, error = %error, "scheduled drift scan did not run; trying again at the next interval");
        }
    }
    Scanned::Done
}
