//! `pgrollout drift` (issue 20): asks an agent of the environment's zone to
//! compare its target's live catalog with the ledger. Like the audit
//! anchors' read, it is not a rollout: no rollout, job or event rows, only
//! an audit entry; the offer travels the watch samples' side channel and
//! its answer comes back to this caller alone.

use std::time::{Duration, SystemTime};

use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{controller_message, ControllerMessage, DriftReport, Outcome};
use pgrollout_shared::traceparent::TraceParent;

use super::error::EngineError;
use super::watch::Reply;
use super::{new_id, Controller};

/// How long the scan waits for an agent of the zone between connections.
const AGENT_WAIT: Duration = Duration::from_secs(5);
/// How long one scan may take on the agent.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one scan found, and where.
#[derive(Debug)]
pub struct DriftScan {
    pub zone: String,
    pub target: String,
    pub agent: String,
    pub report: DriftReport,
}

/// Scans `environment` for drift of the routines `names` (all when empty).
pub async fn scan(
    controller: &Controller,
    environment: &str,
    names: Vec<String>,
    actor: &str,
) -> Result<DriftScan, EngineError> {
    let Some(settings) = controller.config.environments.get(environment) else {
        let known: Vec<&str> = controller
            .config
            .environments
            .keys()
            .map(String::as_str)
            .collect();
        return Err(EngineError::Invalid(format!(
            "unknown environment {environment:?}; known environments: {}",
            known.join(", ")
        )));
    };
    let target = settings.target.clone();
    let zone = controller
        .config
        .zone_of(environment)
        .unwrap_or_else(|| environment.to_owned());
    let agent = controller
        .registry
        .wait_for(&zone, &target, AGENT_WAIT)
        .await
        .ok_or_else(|| {
            EngineError::Unavailable(format!(
                "no agent of zone {zone} serving target {target} is connected; nothing was scanned \
                 (`pgrollout drift {environment} --cached` shows the last recorded scan)"
            ))
        })?;
    let job_id = new_id("drift");
    let job = Job {
        id: job_id.clone(),
        attempt: 1,
        // Reads only: nothing to fence.
        lease: None,
        deadline: SystemTime::now() + SCAN_TIMEOUT,
        trace: TraceParent::new_root(),
        target: target.clone(),
        rollout_id: "drift".to_owned(),
        plan_id: "drift:scan".to_owned(),
        actor: actor.to_owned(),
        commit_sha: String::new(),
        label: "drift".to_owned(),
        backup_retention_days: 0,
        audit_head: None,
        kind: JobKind::Drift { names },
    };
    let reply = controller.watches.expect(&job_id, &agent.zone, &agent.name);
    let offer = ControllerMessage {
        body: Some(controller_message::Body::Offer(job.into())),
    };
    if agent.sender.send(Ok(offer)).await.is_err() {
        controller.watches.forget(&job_id);
        return Err(EngineError::Unavailable(format!(
            "agent {} disconnected before it was asked; nothing was scanned",
            agent.name
        )));
    }
    let answer = tokio::time::timeout(SCAN_TIMEOUT + Duration::from_secs(5), reply).await;
    controller.watches.forget(&job_id);
    let report = match answer {
        Ok(Ok(Reply::Result(result))) if result.outcome() == Outcome::Succeeded => {
            result.drift.unwrap_or_default()
        }
        Ok(Ok(Reply::Result(result))) => {
            return Err(EngineError::Internal(format!(
                "agent {} could not scan for drift: {}",
                agent.name, result.message
            )))
        }
        Ok(Ok(Reply::Declined(reason))) => {
            return Err(EngineError::Unavailable(format!(
                "agent {} declined the drift scan (an agent older than drift detection?): {reason}",
                agent.name
            )))
        }
        Ok(Err(_)) | Err(_) => {
            return Err(EngineError::Unavailable(format!(
                "agent {} did not answer the drift scan within {}s",
                agent.name,
                SCAN_TIMEOUT.as_secs()
            )))
        }
    };
    Ok(DriftScan {
        zone,
        target,
        agent: agent.name.clone(),
        report,
    })
}
