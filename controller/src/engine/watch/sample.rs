//! One sample: offer a `watch_sample` job to an agent of the environment's
//! zone — connected here or to another controller (`delivery::ask`) — and
//! wait for its answer. Nothing is recorded here; the caller keeps
//! what it needs on the watch.

use std::time::{Duration, SystemTime};

use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{Outcome, WatchSample};
use pgrollout_shared::traceparent::TraceParent;
use pgrollout_shared::watch::WatchSampleSpec;

use crate::engine::delivery::{self, SideReply};
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
    #[error("no sample came back from agent {agent}: {why}")]
    Lost { agent: String, why: String },
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
    let job = Job {
        id: new_id("ws"),
        attempt: 1,
        // A sample only reads: nothing to fence.
        lease: None,
        deadline: SystemTime::now() + timeout,
        trace: TraceParent::new_root(),
        target: target.clone(),
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
    // Here or through the controller holding the agent (issue 18).
    let answered = delivery::ask(
        controller,
        &zone,
        &target,
        agent_wait,
        job,
        timeout + Duration::from_secs(5),
    )
    .await
    .ok_or_else(|| SampleError::NoAgent {
        zone: zone.clone(),
        target: target.clone(),
    })?;
    let name = answered.agent;
    match answered.reply {
        SideReply::Result(result) => match (result.outcome(), result.watch_sample) {
            (Outcome::Succeeded, Some(sample)) => Ok(*sample),
            _ => Err(SampleError::Failed {
                agent: name,
                message: result.message,
            }),
        },
        SideReply::Declined(reason) => Err(SampleError::Declined {
            agent: name,
            reason,
        }),
        SideReply::Lost(why) => Err(SampleError::Lost { agent: name, why }),
        SideReply::TimedOut => Err(SampleError::TimedOut {
            agent: name,
            within: timeout,
        }),
    }
}
