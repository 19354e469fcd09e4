//! An agent's Hello lists the jobs it runs or finished without an
//! acknowledgement (DESIGN §4.1). Before it is offered anything new, the
//! controller squares that with its store: jobs the agent still runs are
//! `running` again and followed on the new session; jobs the store thinks
//! the agent holds but the agent does not know are left `unknown`, said so
//! plainly, for an operator to resolve; jobs offered but never accepted were
//! never begun (the agent journals a start before it accepts) and fail.

use std::collections::BTreeSet;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;

use crate::domain::agent_report::InFlightJob;
use crate::engine::registry::AgentHandle;
use crate::engine::Controller;
use crate::store::{state, AuditEntry};

pub async fn reconcile(controller: &Controller, agent: &AgentHandle, in_flight: &[InFlightJob]) {
    let actor = format!("agent {}/{}", agent.zone, agent.name);
    for job in in_flight.iter().filter(|job| !job.finished) {
        match controller
            .store
            .reattach_job(&job.job.id, job.job.attempt, &agent.name, &agent.zone)
            .await
        {
            Ok(true) => {
                let followed = controller
                    .router
                    .reattach(&job.job.id, agent.session, &agent.name);
                tracing::info!(agent = %agent.name, job_id = %job.job.id, followed, "job reattached after reconnect");
                controller
                    .audit(AuditEntry {
                        actor: actor.clone(),
                        action: "job.reattached".into(),
                        outcome: "ok".into(),
                        details: format!(
                            "job {} attempt {} still running on the agent after it reconnected",
                            job.job.id, job.job.attempt
                        ),
                        ..Default::default()
                    })
                    .await;
            }
            Ok(false) => {
                tracing::debug!(agent = %agent.name, job_id = %job.job.id, "in-flight job not held in the store")
            }
            Err(error) => {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reattaching a job failed")
            }
        }
    }
    let known: BTreeSet<(&str, u32)> = in_flight
        .iter()
        .map(|job| (job.job.id.as_str(), job.job.attempt))
        .collect();
    let held = match controller
        .store
        .jobs_held_by(&agent.name, &agent.zone)
        .await
    {
        Ok(held) => held,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reading the agent's jobs failed");
            return;
        }
    };
    for job in held
        .iter()
        .filter(|job| !known.contains(&(job.job_id.as_str(), job.attempt)))
    {
        // The agent journals a job's start before it accepts it, so a job it
        // never accepted and does not list was never begun; one it accepted
        // and forgot (a lost state_dir) is in doubt.
        let (rollout_state, action, message) = if job.accepted {
            (
                state::UNKNOWN,
                "job.unaccounted",
                format!(
                    "agent {} reconnected without any record of job {} (was its state_dir lost?); check the \
                     target's ledger for this job id, then `pgrollout resolve {}`",
                    agent.name, job.job_id, job.rollout_id
                ),
            )
        } else {
            (
                state::FAILED,
                "job.never_begun",
                format!(
                    "agent {} never began job {} (offered on a link that broke before the agent accepted it); \
                     nothing ran",
                    agent.name, job.job_id
                ),
            )
        };
        tracing::warn!(agent = %agent.name, job_id = %job.job_id, action, "held job not listed by its agent");
        let _ = controller
            .store
            .abandon_job(
                &job.job_id,
                job.attempt,
                rollout_state,
                ExitCode::DeploymentFailed.code(),
                &message,
                now_unix_ms(),
            )
            .await;
        controller
            .audit(AuditEntry {
                actor: actor.clone(),
                action: action.into(),
                outcome: rollout_state.into(),
                rollout_id: Some(job.rollout_id.clone()),
                details: message,
                ..Default::default()
            })
            .await;
    }
}
