//! `pgrollout retry`: a rollout in doubt gets its job again, as attempt
//! N+1 of the same job id. The job id is the ledger's idempotency key, so if
//! attempt N did commit, the new attempt finds its rows and reports them
//! instead of applying anything twice (DESIGN §4.4: a retry is a new attempt,
//! visible in the audit trail, never automatic).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{rollout_update, RolloutStarted, RolloutUpdate};
use prost::Message;
use tokio::sync::mpsc;

use super::error::EngineError;
use super::rollout::relay;
use super::updates::Updates;
use super::Controller;
use crate::store::{state, AuditEntry};

pub async fn retry(
    controller: Arc<Controller>,
    rollout_id: &str,
    actor: &str,
) -> Result<Updates, EngineError> {
    let store_error = EngineError::store("read or record the retry");
    // Held until the result was relayed: a draining controller waits for it.
    let in_flight = controller.drain.enter()?;
    let rollout = controller
        .store
        .rollout_status(rollout_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            EngineError::NotFound(format!("no rollout {rollout_id}; see `pgrollout rollouts`"))
        })?;
    let latest = controller
        .store
        .latest_job(rollout_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| EngineError::NotFound(format!("rollout {rollout_id} has no job")))?;
    if latest.rollout_state != state::UNKNOWN {
        return Err(EngineError::Refused(format!(
            "rollout {rollout_id} is {}, not unknown: only a rollout in doubt is retried (deploy again for a new \
             rollout)",
            latest.rollout_state
        )));
    }
    let mut offer = latest.offer.ok_or_else(|| {
            EngineError::Refused(format!(
                "rollout {rollout_id} was recorded by an older controller without its offer; deploy again"
            ))
        })?;
    let environment = controller
        .config
        .environments
        .get(&latest.environment)
        .ok_or_else(|| {
            EngineError::Refused(format!(
                "environment {} of rollout {rollout_id} is no longer configured",
                latest.environment
            ))
        })?;
    let zone = controller
        .config
        .zone_of(&latest.environment)
        .unwrap_or_else(|| latest.environment.clone());
    // Connected here or to another controller of the store (issue 18).
    let destination = super::delivery::find_agent(
        &controller,
        &zone,
        &environment.target,
        Duration::from_secs(5),
    )
    .await
    .ok_or_else(|| {
        EngineError::Unavailable(format!(
            "no agent connected for zone {zone}; the retry needs one (see `pgrollout agents`)"
        ))
    })?;
    let agent_name = destination.agent_name().to_owned();
    let attempt = latest.attempt + 1;
    let job_timeout = controller.config.deployment.job_timeout;
    offer.attempt = attempt;
    offer.deadline_unix_ms = (SystemTime::now() + job_timeout)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    offer.lease_ms =
        u32::try_from(controller.config.deployment.job_lease.as_millis()).unwrap_or(u32::MAX);
    let job_id = latest.job_id.clone();
    controller
        .store
        .new_attempt(
            rollout_id,
            &job_id,
            attempt,
            &agent_name,
            offer.encode_to_vec(),
            now_unix_ms(),
        )
        .await
        .map_err(store_error)?;
    controller
        .audit(AuditEntry {
            actor: actor.to_owned(),
            action: "rollout.retried".into(),
            outcome: "ok".into(),
            rollout_id: Some(rollout_id.to_owned()),
            environment: Some(latest.environment.clone()),
            procedure: Some(rollout.label.clone()),
            trace_id: Some(rollout.trace_id.clone()),
            details: format!(
                "job {job_id} attempt {attempt} (previous attempt in doubt) to agent {agent_name}"
            ),
        })
        .await;
    super::rollout::claim_job_offered(&controller, &job_id, attempt).await;
    let updates = super::delivery::offer_job(&controller, &destination, &job_id, attempt, offer)
        .await
        .map_err(|why| {
            EngineError::Unavailable(format!("{why}; the rollout stays running until settled"))
        })?;
    let (out, receiver) = mpsc::channel(256);
    let started = RolloutStarted {
        rollout_id: rollout_id.to_owned(),
        job_id: job_id.clone(),
        environment: latest.environment,
        zone,
        agent_name: agent_name.clone(),
        trace_id: rollout.trace_id.clone(),
        actor: actor.to_owned(),
        started_at_unix_ms: now_unix_ms(),
        gates: Vec::new(),
        // The first attempt showed the order; the retry applies the same job.
        order: None,
        fleet_targets: 0,
    };
    let _ = out
        .send(Ok(RolloutUpdate {
            body: Some(rollout_update::Body::Started(started)),
        }))
        .await;
    tokio::spawn(async move {
        relay(
            controller,
            agent_name,
            job_id,
            attempt,
            updates,
            out,
            job_timeout,
        )
        .await;
        drop(in_flight);
    });
    Ok(receiver)
}
