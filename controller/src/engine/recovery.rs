//! What a starting controller does about the previous one's unfinished
//! work: a job that was offered or running is in doubt (its agent may have
//! finished it, or be finishing it now), so its rollout becomes `unknown`
//! — never re-run — until the agent reconnects and reports from its journal.
//! A job recorded but never offered to any agent fails: nothing ran.

use pgrollout_shared::job::now_unix_ms;

use super::Controller;
use crate::store::AuditEntry;

pub async fn after_restart(controller: &Controller) {
    let interrupted = match controller.store.interrupt_running(now_unix_ms()).await {
        Ok(interrupted) => interrupted,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "cannot mark interrupted jobs unknown");
            return;
        }
    };
    for job in &interrupted.never_offered {
        tracing::warn!(job_id = %job.job_id, rollout_id = %job.rollout_id, "job never offered before a controller restart: failed");
        controller
            .audit(AuditEntry {
                actor: "controller".into(),
                action: "job.never_offered".into(),
                outcome: "failed".into(),
                rollout_id: Some(job.rollout_id.clone()),
                details: format!(
                    "job {} attempt {}: {}",
                    job.job_id,
                    job.attempt,
                    crate::store::NEVER_OFFERED
                ),
                ..Default::default()
            })
            .await;
        controller.notifier.rollout_finished(&job.job_id);
    }
    // Issue 24: fleet rollouts whose driver died with the old process.
    super::fleet::after_restart(controller).await;
    for job in interrupted.in_doubt {
        tracing::warn!(job_id = %job.job_id, rollout_id = %job.rollout_id, "job in doubt after a controller restart");
        controller
            .audit(AuditEntry {
                actor: "controller".into(),
                action: "job.interrupted".into(),
                outcome: "unknown".into(),
                rollout_id: Some(job.rollout_id.clone()),
                details: format!(
                    "job {} attempt {} was out when the controller stopped; unknown until its agent reports",
                    job.job_id, job.attempt
                ),
                ..Default::default()
            })
            .await;
    }
}
