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

use tokio::time::Instant;

use super::drift;
use super::Controller;

/// How often the schedule looks at the settings.
const TICK: Duration = Duration::from_millis(250);

/// Who the audit log names for a scheduled scan.
pub const SCHEDULE_ACTOR: &str = "controller (drift_scan_interval)";

/// Runs until the process ends.
pub async fn run(controller: Arc<Controller>) {
    // When each environment's next scan is due; a scan in progress has no
    // entry, so it is never started twice.
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut running: Vec<String> = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(finished) = done_rx.recv() => {
                running.retain(|environment| *environment != finished);
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
            let (controller, environment, done) =
                (controller.clone(), environment.clone(), done_tx.clone());
            tokio::spawn(async move {
                scan(&controller, &environment).await;
                let _ = done.send(environment);
            });
        }
    }
}

async fn scan(controller: &Controller, environment: &str) {
    match drift::scan_and_record(
        controller,
        environment,
        Vec::new(),
        drift::Requester::Schedule(SCHEDULE_ACTOR),
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
        Err(error) => {
            tracing::warn!(environment, error = %error, "scheduled drift scan did not run; trying again at the next interval");
        }
    }
}
