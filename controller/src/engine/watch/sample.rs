//! One sample: offer a `watch_sample` job to an agent of the environment's
//! zone and wait for its answer. Nothing is recorded here; the caller keeps
//! what it needs on the watch.

use std::time::{Duration, SystemTime};

use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{controller_message, ControllerMessage, Outcome, WatchSample};
use pgrollout_shared::traceparent::TraceParent;
use pgrollout_shared::watch::WatchSampleSpec;

use super::Reply;
use crate::engine::{new_id, Controller};

/// The agent's time for one sample, and the controller's wait for it (plus a
/// grace for the report): at least long enough for a smoke test's default
/// bound, at most a minute.
pub fn sample_timeout(every: Duration) -> Duration {
    every.clamp(Duration::from_secs(15), Duration::from_secs(60))
}

/// Why no sample came back.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("environment {0} is no longer configured")]
    UnknownEnvironment(String),
    #[error("no agent connected for zone {zone} (target {target})")]
    NoAgent { zone: String, target: String },
    #[error("agent {0} disconnected before the sample could be offered")]
    AgentGone(String),
    #[error("agent {agent} declined the sample: {reason}")]
    Declined { agent: String, reason: String },
    #[error("agent {agent} did not answer within {}", humantime::format_duration(*.within))]
    TimedOut { agent: String, within: Duration },
    #[error("agent {agent} could not take the sample: {message}")]
    Failed { agent: String, message: String },
}

/// Offers one sample of `spec` in `environment` and waits for it.
pub async fn take(
    controller: &Controller,
    environment: &str,
    label: &str,
    spec: &WatchSampleSpec,
    agent_wait: Duration,
    timeout: Duration,
) -> Result<WatchSample, SampleError> {
    let target = controller
        .config
        .environments
        .get(environment)
        .map(|e| e.target.clone())
        .ok_or_else(|| SampleError::UnknownEnvironment(environment.to_owned()))?;
    let zone = controller
        .config
        .zone_of(environment)
        .unwrap_or_else(|| environment.to_owned());
    let agent = controller
        .registry
        .wait_for(&zone, &target, agent_wait)
        .await
        .ok_or_else(|| SampleError::NoAgent {
            zone: zone.clone(),
            target: target.clone(),
        })?;
    let job_id = new_id("ws");
    let job = Job {
        id: job_id.clone(),
        attempt: 1,
        // A sample only reads: nothing to fence.
        lease: None,
        deadline: SystemTime::now() + timeout,
        trace: TraceParent::new_root(),
        target,
        // A sample has no rollout and no plan: the watch stands in for both.
        rollout_id: spec.watch_id.clone(),
        plan_id: format!("watch:{}", spec.watch_id),
        actor: "controller".to_owned(),
        commit_sha: String::new(),
        label: label.to_owned(),
        backup_retention_days: 0,
        audit_head: None,
        approvals: Default::default(),
        kind: JobKind::WatchSample(spec.clone()),
    };
    let reply = controller.watches.expect(&job_id, &agent.zone, &agent.name);
    let offer = ControllerMessage {
        body: Some(controller_message::Body::Offer(job.into())),
    };
    if agent.sender.send(Ok(offer)).await.is_err() {
        controller.watches.forget(&job_id);
        return Err(SampleError::AgentGone(agent.name.clone()));
    }
    let answer = tokio::time::timeout(timeout + Duration::from_secs(5), reply).await;
    controller.watches.forget(&job_id);
    let name = agent.name.clone();
    match answer {
        Ok(Ok(Reply::Result(result))) => match (result.outcome(), result.watch_sample) {
            (Outcome::Succeeded, Some(sample)) => Ok(*sample),
            _ => Err(SampleError::Failed {
                agent: name,
                message: result.message,
            }),
        },
        Ok(Ok(Reply::Declined(reason))) => Err(SampleError::Declined {
            agent: name,
            reason,
        }),
        Ok(Err(_)) | Err(_) => Err(SampleError::TimedOut {
            agent: name,
            within: timeout,
        }),
    }
}
