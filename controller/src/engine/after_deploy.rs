//! What an environment asks its agent to run after a successful deploy
//! (pgTAP files, performance probes), and recording what comes back: the
//! probes' medians go to the store for the next environment's performance
//! gate (pgTAP reports stay in the job's stored result, where the
//! tests_passed gate reads them).

use crate::domain::result_payload::ResultPayload;
use pgrollout_shared::job::{now_unix_ms, JobKind};
use pgrollout_shared::perf_target::PerfTarget;
use pgrollout_shared::routine::Routine;

use super::{perf_baseline, Controller};
use crate::config::Environment;
use crate::store::AuditEntry;

/// The deploy job with the environment's after-deploy steps switched on,
/// and any performance probe told what the environments promoted from here
/// run now (the baseline their gates compare with).
pub async fn with_environment_steps(
    controller: &Controller,
    kind: JobKind,
    name: &str,
    environment: &Environment,
) -> JobKind {
    match kind {
        JobKind::Deploy {
            routines,
            mut batch,
        } => {
            batch.run_pgtap = environment.run_pgtap;
            batch.run_perf_probe = environment.run_perf_probe;
            // The no_drift gate is judged by the agent, against the live catalog.
            batch.refuse_drift = environment
                .effective_gates()
                .contains(&crate::config::GateName::NoDrift);
            if batch.run_perf_probe {
                batch.perf_targets = targets(controller, name, &routines).await;
            }
            JobKind::Deploy { routines, batch }
        }
        JobKind::PerfProbe { routines, .. } => {
            let targets = targets(controller, name, &routines).await;
            JobKind::PerfProbe { routines, targets }
        }
        other => other,
    }
}

/// The perf targets of a probe in `environment`; when the store cannot say,
/// none (the probe then times this database's own old definitions, which no
/// target's gate accepts: it fails closed and says why).
async fn targets(
    controller: &Controller,
    environment: &str,
    routines: &[Routine],
) -> Vec<PerfTarget> {
    let identities: Vec<String> = routines.iter().map(|r| r.identity.to_string()).collect();
    perf_baseline::perf_targets(&controller.config, &controller.store, environment, &identities)
        .await
        .unwrap_or_else(|error| {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), %environment, "reading what the target environments run failed");
            Vec::new()
        })
}

/// Records the performance probes a result carries (a `perf_probe` job, or
/// a deploy that ran them), before the result is relayed, so a gate asked
/// right after sees them. A failure is logged and audited: the gate then
/// finds no probe and fails closed.
pub async fn record_probes(controller: &Controller, job_id: &str, result: &ResultPayload) {
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
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), %job_id, "recording performance probes failed");
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
