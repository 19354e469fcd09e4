//! Refusals an agent reports on connecting (issue 19): jobs its `[approvals]`
//! policy refused, kept in its state dir and sent to every controller it
//! connects to — so a job a hostile controller offered, and whose result it
//! dropped, still reaches the audit log once the agent is back with the real
//! controller. Each (agent, job, attempt) is recorded once (store
//! `agent_refusals`, migration 0016) and audited as `agent.refused_job`,
//! naming the agent, the job, the plan id and request it claimed, the
//! controller address the agent was connected to, and the agent's reason.

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::RefusedJob;
use pgrollout_shared::text::escape_controls;

use crate::engine::registry::AgentHandle;
use crate::engine::Controller;
use crate::store::AuditEntry;

/// Longest text kept of one field: the job's fields are whatever the
/// controller that offered it wrote.
const FIELD_LIMIT: usize = 300;

fn field(text: &str) -> String {
    let escaped = escape_controls(text);
    match escaped.char_indices().nth(FIELD_LIMIT) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped.into_owned(),
    }
}

pub async fn record(controller: &Controller, agent: &AgentHandle, refused: &RefusedJob) {
    let first = controller
        .store
        .record_agent_refusal(
            &agent.name,
            &refused.job_id,
            refused.attempt,
            refused.refused_unix_ms,
            now_unix_ms(),
        )
        .await;
    match first {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), agent = %agent.name, job_id = %field(&refused.job_id), "recording an agent's refusal failed");
            return;
        }
    }
    tracing::warn!(agent = %agent.name, zone = %agent.zone, job_id = %field(&refused.job_id), "the agent reports a job its approval policy refused");
    controller
        .audit(AuditEntry {
            actor: format!("agent {}/{}", agent.zone, agent.name),
            action: "agent.refused_job".into(),
            outcome: "refused".into(),
            details: format!(
                "agent {}/{} refused job {} (attempt {}, {} on target {}, rollout {}) claiming plan id {} and request \
                 {} by {}, offered while connected to {} at {} ms since the epoch: {}",
                agent.zone,
                agent.name,
                field(&refused.job_id),
                refused.attempt,
                field(&refused.kind),
                field(&refused.target),
                field(&refused.rollout_id),
                field(&refused.plan_id),
                field(&refused.request_id),
                field(&refused.actor),
                field(&refused.controller),
                refused.refused_unix_ms,
                field(&refused.reason),
            ),
            ..Default::default()
        })
        .await;
}
