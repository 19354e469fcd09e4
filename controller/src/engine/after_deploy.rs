//! What an environment asks its agent to run after a successful deploy
//! (pgTAP files, performance probes), and recording what comes back: the
//! probes' medians go to the store for the next environment's performance
//! gate (pgTAP reports stay in the job's stored result, where the
//! tests_passed gate reads them).

use pgrollout_shared::job::{now_unix_ms, JobKind};
use pgrollout_shared::proto::JobResult;

use super::Controller;
use crate::config::Environment;
use crate::store::AuditEntry;

/// The deploy job with the environment's after-deploy steps switched on.
pub fn with_environment_steps(kind: JobKind, environment: &Environment) -> JobKind {
    match kind {
        JobKind::Deploy {
            routines,
            mut batch,
        } => {
            batch.run_pgtap = environment.run_pgtap;
            batch.run_perf_probe = environment.run_perf_probe;
            JobKind::Deploy { routines, batch }
        }
        other => other,
    }
}

/// Records the performance probes a result carries (a `perf_probe` job, or
/// a deploy that ran them), before the result is relayed, so a gate asked
/// right after sees them. A failure is logged and audited: the gate then
/// finds no probe and fails closed.
pub async fn record_probes(controller: &Controller, job_id: &str, result: &JobResult) {
    if result.perf.is_empty() {
        return;
    }
    match controller
        .store
        .record_perf_probes(job_id, &result.perf, now_unix_ms())
        .await
    {
        Ok(recorded) => tracing::info!(%job_id, recorded, "performance probes recorded"),
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), %job_id, "recording performance probes failed");
            controller
                .audit(AuditEntry {
                    actor: "controller".into(),
                    action: "perf.record_failed".into(),
                    outcome: "error".into(),
                    details: format!(
                        "job {job_id}: the performance gate will not see these probes"
                    ),
                    ..Default::default()
                })
                .await;
        }
    }
}
