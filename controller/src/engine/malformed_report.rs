//! What happens to a message of an agent that failed its check at the edge
//! (`domain/agent_report.rs`). A hostile or buggy agent must wedge neither
//! the link nor a rollout: the link acknowledges the report all the same
//! (else the agent replays it from its outbox forever), and here it gets an
//! outcome an operator can see and act on.
//!
//! - A malformed **result** of a job this agent holds: nobody can say what
//!   the job did, so its rollout becomes `unknown` with a message naming the
//!   agent and the field — the same state as a job whose agent vanished, and
//!   settled the same way (`status`, the target's ledger, then `resolve` or
//!   `retry`). The rollout following the job ends with that message.
//! - A malformed **event**: dropped; the operator following the job is told,
//!   and the job's result, when it comes, decides the rollout as usual.
//! - Anything else (an accept or decline): dropped.
//!
//! Every one is audited as `agent.malformed_report`, named by its rollout
//! when the job is one this agent holds.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;

use super::registry::AgentHandle;
use super::router::JobUpdate;
use super::Controller;
use crate::domain::agent_report::{JobRef, MalformedReport};
use crate::store::{state, AuditEntry};

/// Records the malformed report's outcome; the caller acknowledges it.
pub async fn settle(controller: &Controller, agent: &AgentHandle, malformed: MalformedReport) {
    let actor = format!("agent {}/{}", agent.zone, agent.name);
    tracing::warn!(agent = %agent.name, zone = %agent.zone, reason = %malformed, "malformed report from an agent");
    // Only a job this agent holds is touched: an agent cannot settle, or
    // interrupt, another agent's job by naming it.
    let job = match &malformed.job {
        Some(job) if held_by(controller, agent, job).await => Some(job),
        _ => None,
    };
    let (outcome, message) = match (malformed.what, job) {
        ("result", Some(job)) => {
            let message = format!(
                "{actor} sent a {malformed} for job {} attempt {}; the rollout is unknown: the target's ledger says \
                 whether the job applied (`pgrollout status`), then `pgrollout resolve` or `pgrollout retry`",
                job.id, job.attempt
            );
            if let Err(error) = controller
                .store
                .abandon_job(
                    &job.id,
                    job.attempt,
                    state::UNKNOWN,
                    ExitCode::DeploymentFailed.code(),
                    &message,
                    now_unix_ms(),
                )
                .await
            {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "settling a job after a malformed result failed");
            }
            controller.router.publish(
                &job.id,
                JobUpdate::Malformed {
                    message: message.clone(),
                },
            );
            ("unknown", message)
        }
        ("event", Some(job)) => {
            let message = format!(
                "{actor} sent a {malformed} for job {} attempt {}; the event was dropped, the job's result decides",
                job.id, job.attempt
            );
            controller.router.publish(
                &job.id,
                JobUpdate::Notice {
                    message: message.clone(),
                },
            );
            ("dropped", message)
        }
        _ => ("dropped", format!("{actor} sent a {malformed}; dropped")),
    };
    let rollout = match job {
        Some(job) => controller.store.job_rollout(&job.id).await.ok().flatten(),
        None => None,
    };
    controller
        .audit(AuditEntry {
            rollout_id: rollout.as_ref().map(|r| r.rollout_id.clone()),
            environment: rollout.as_ref().map(|r| r.environment.clone()),
            procedure: rollout.as_ref().map(|r| r.label.clone()),
            trace_id: rollout.as_ref().map(|r| r.trace_id.clone()),
            actor,
            action: "agent.malformed_report".into(),
            outcome: outcome.into(),
            details: message,
        })
        .await;
}

async fn held_by(controller: &Controller, agent: &AgentHandle, job: &JobRef) -> bool {
    match controller
        .store
        .jobs_held_by(&agent.name, &agent.zone)
        .await
    {
        Ok(held) => held
            .iter()
            .any(|h| h.job_id == job.id && h.attempt == job.attempt),
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reading the jobs an agent holds failed");
            false
        }
    }
}
