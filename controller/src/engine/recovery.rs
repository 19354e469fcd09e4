//! What a starting controller does about the previous one's unfinished
//! work: a job that was offered or running is in doubt (its agent may have
//! finished it, or be finishing it now), so its rollout becomes `unknown`
//! — never re-run — until the agent reconnects and reports from its journal.
//! A job recorded but never offered to any agent fails: nothing ran.
//!
//! On a store shared by several controllers (PostgreSQL, issue 18) only the
//! jobs whose controller is dead are settled: this one's previous life's,
//! those of controllers whose heartbeat expired, and unclaimed ones when no
//! other controller is alive. A live controller's jobs are its own to
//! follow. The same settlement runs with every heartbeat for controllers
//! that die while this one runs (`identity::keep_alive`).

use pgrollout_shared::job::now_unix_ms;

use super::Controller;
use crate::store::{AuditEntry, Settle};

pub async fn after_restart(controller: &Controller) {
    let settled = settle(controller, Settle::AtStart).await;
    tracing::info!(settled, "start-up recovery done");
    // Requests a stopped controller left starting (issue 18: only a dead
    // one's), before this one starts any.
    super::requests::settle_interrupted_starts(controller, Settle::AtStart).await;
    // Issue 24: fleet rollouts whose driver died with the old process.
    super::fleet::after_restart(controller, Settle::AtStart).await;
}

/// Settles (and audits) the jobs no live controller follows; how many.
pub async fn settle(controller: &Controller, which: Settle) -> usize {
    let now = now_unix_ms();
    let interrupted = match controller.identity.get() {
        Some(me) if controller.store.shared_by_controllers() => {
            controller
                .store
                .settle_orphaned_jobs(&me.id, which, now, super::identity::dead_after_ms())
                .await
        }
        // One controller (SQLite): every job out was the previous one's.
        _ => controller.store.interrupt_running(now).await,
    };
    let interrupted = match interrupted {
        Ok(interrupted) => interrupted,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "cannot mark interrupted jobs unknown");
            return 0;
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
    for job in &interrupted.in_doubt {
        tracing::warn!(job_id = %job.job_id, rollout_id = %job.rollout_id, "job in doubt: the controller that offered it stopped");
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
    interrupted.in_doubt.len() + interrupted.never_offered.len()
}
