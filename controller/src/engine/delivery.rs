//! Issue 18, item 2: a job reaches its agent through the controller that
//! holds the agent's stream, whichever controller the operator asked.
//!
//! Three parts, all on a store shared by several controllers (PostgreSQL;
//! an SQLite store has one controller, which offers every job itself):
//! - the registry in the store: each stream opened or closed here is
//!   recorded (`agent_streams`, a newer stream epoch wins);
//! - the requester: finding an agent looks here first, then in the store
//!   for a stream another live controller holds ([`find_agent`]); a job for
//!   such an agent is recorded as waiting for it, and the rollout follows it
//!   in the store ([`follow_in_store`]) with the same updates a local job
//!   produces, so the operator reads the same report;
//! - the picker ([`run`]): woken by NOTIFY (polling as the fallback), takes
//!   each waiting job for an agent it holds by compare-and-set, so the offer
//!   goes out once, and offers it on the agent's stream. Everything the
//!   agent reports is recorded by the link as for any job.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{controller_message, ControllerMessage};
use tokio::sync::mpsc;

use super::identity::dead_after_ms;
use super::registry::AgentHandle;
use super::router::JobUpdate;
use super::Controller;
use crate::domain::agent_report::{ReportedEvent, ReportedResult};
use crate::store::{AgentStream, Delivery};

/// How often the picker looks for waiting jobs without a notification.
const PICK_POLL: Duration = Duration::from_secs(1);

/// How often a rollout following its job from another controller reads the
/// job's progress in the store.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// How long the requester waits on its own registry before asking the store
/// again, while it waits for an agent to connect anywhere.
const FIND_SLICE: Duration = Duration::from_millis(500);

/// Where a job's agent is.
pub enum Destination {
    /// Its stream is held here.
    Local(Arc<AgentHandle>),
    /// Another live controller holds its stream.
    Remote(AgentStream),
}

impl Destination {
    pub fn agent_name(&self) -> &str {
        match self {
            Destination::Local(agent) => &agent.name,
            Destination::Remote(stream) => &stream.agent_name,
        }
    }
}

/// This controller's id when its store is shared by several controllers.
fn shared_id(controller: &Controller) -> Option<String> {
    if !controller.store.shared_by_controllers() {
        return None;
    }
    controller.identity.get().map(|me| me.id.clone())
}

/// An agent of `zone` serving `target`: one connected here, else one whose
/// stream another live controller holds; waits up to `wait` for either.
pub async fn find_agent(
    controller: &Controller,
    zone: &str,
    target: &str,
    wait: Duration,
) -> Option<Destination> {
    let Some(me) = shared_id(controller) else {
        let agent = controller.registry.wait_for(zone, target, wait).await?;
        return Some(Destination::Local(agent));
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut slice = Duration::ZERO;
    loop {
        if let Some(agent) = controller.registry.wait_for(zone, target, slice).await {
            return Some(Destination::Local(agent));
        }
        match controller
            .store
            .remote_agent_stream(zone, target, &me, now_unix_ms(), dead_after_ms())
            .await
        {
            Ok(Some(stream)) => return Some(Destination::Remote(stream)),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), "cannot read the agents' streams")
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        // Wait here for a local agent, then ask the store again.
        slice = left.min(FIND_SLICE);
    }
}

/// Records the job's attempt as waiting for `stream`'s controller and
/// follows it in the store; the receiver hears what a local job's rollout
/// hears from the router.
pub async fn request(
    controller: &Arc<Controller>,
    stream: &AgentStream,
    job_id: &str,
    attempt: u32,
) -> Result<mpsc::UnboundedReceiver<JobUpdate>, crate::store::StoreError> {
    let me = shared_id(controller).unwrap_or_default();
    controller
        .store
        .request_delivery(
            &Delivery {
                job_id: job_id.to_owned(),
                attempt,
                zone: stream.zone.clone(),
                agent_name: stream.agent_name.clone(),
            },
            &me,
            now_unix_ms(),
        )
        .await?;
    tracing::info!(job_id, agent = %stream.agent_name, via = %stream.controller_id, "job waits for the controller holding its agent");
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(follow_in_store(
        controller.clone(),
        job_id.to_owned(),
        attempt,
        sender,
    ));
    Ok(receiver)
}

/// Turns the job's progress in the store into the router's updates: the
/// claim, each event once in order, then the result or the decline. Ends
/// when the rollout stops listening or the job has ended. A store that is
/// briefly unreachable (restarting) is read again at the next tick.
async fn follow_in_store(
    controller: Arc<Controller>,
    job_id: String,
    attempt: u32,
    updates: mpsc::UnboundedSender<JobUpdate>,
) {
    let (mut accepted, mut last_seq) = (false, 0u64);
    let mut tick = tokio::time::interval(FOLLOW_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if updates.is_closed() {
            return;
        }
        let progress = match controller
            .store
            .job_progress(&job_id, attempt, last_seq)
            .await
        {
            Ok(progress) => progress,
            Err(error) => {
                tracing::warn!(job_id = %job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot read the job's progress; reading again");
                continue;
            }
        };
        if let Some(reason) = progress.declined {
            let _ = updates.send(JobUpdate::Declined { reason });
            return;
        }
        if progress.accepted && !accepted {
            accepted = true;
            let _ = updates.send(JobUpdate::Accepted);
        }
        for event in progress.events {
            last_seq = event.seq;
            match ReportedEvent::try_from(event) {
                Ok(event) => {
                    let _ = updates.send(JobUpdate::Event(event));
                }
                // Recorded by the link after its check: cannot fail.
                Err(malformed) => {
                    tracing::warn!(job_id = %job_id, reason = %malformed, "stored event unreadable")
                }
            }
        }
        if let Some(result) = progress.result {
            if !accepted {
                let _ = updates.send(JobUpdate::Accepted);
            }
            let update = match ReportedResult::try_from(result) {
                Ok(result) => JobUpdate::Finished(Box::new(result)),
                Err(malformed) => JobUpdate::Malformed {
                    message: malformed.to_string(),
                },
            };
            let _ = updates.send(update);
            return;
        }
    }
}

/// The requester gave up on the job before any controller took it.
pub async fn withdraw(controller: &Controller, job_id: &str, attempt: u32) {
    if let Err(error) = controller.store.withdraw_delivery(job_id, attempt).await {
        tracing::warn!(job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot withdraw the job's delivery");
    }
}

/// Records that this controller holds `agent`'s stream; returns the
/// stream's epoch (`None` on an unshared store, or when the store failed:
/// the agent is then reachable only through this controller's requests).
pub async fn stream_opened(controller: &Controller, agent: &AgentHandle) -> Option<i64> {
    let me = shared_id(controller)?;
    let targets: Vec<String> = agent.targets.iter().map(|t| t.name.clone()).collect();
    match controller
        .store
        .record_agent_stream(&agent.zone, &agent.name, &me, &targets, now_unix_ms())
        .await
    {
        Ok(epoch) => Some(epoch),
        Err(error) => {
            tracing::warn!(agent = %agent.name, error = %pgrollout_shared::errors::error_chain(&error), "cannot record the agent's stream in the store");
            None
        }
    }
}

/// The stream of `epoch` ended; its row goes unless a newer stream of the
/// agent replaced it.
pub async fn stream_closed(controller: &Controller, agent: &AgentHandle, epoch: Option<i64>) {
    let Some(epoch) = epoch else { return };
    if let Err(error) = controller
        .store
        .end_agent_stream(&agent.zone, &agent.name, epoch)
        .await
    {
        tracing::warn!(agent = %agent.name, error = %pgrollout_shared::errors::error_chain(&error), "cannot record the end of the agent's stream");
    }
}

/// The picker: offers the jobs other controllers recorded for agents whose
/// streams this controller holds. Runs until the process stops.
pub async fn run(controller: Arc<Controller>) {
    let Some(me) = shared_id(&controller) else {
        return;
    };
    loop {
        let mut notes = match controller.store.listen_for_deliveries().await {
            Some(Ok(notes)) => Some(notes),
            Some(Err(error)) => {
                tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), "cannot listen for deliveries; polling");
                None
            }
            None => return,
        };
        loop {
            pick_up(&controller, &me).await;
            let Some(listening) = notes.as_mut() else {
                tokio::time::sleep(PICK_POLL).await;
                // Try to listen again after each poll.
                break;
            };
            match tokio::time::timeout(PICK_POLL, listening.recv()).await {
                // Several notifications at once need one pick-up.
                Ok(Some(_)) => while listening.try_recv().is_ok() {},
                // The listening connection ended (the store restarted, say):
                // listen again, having picked up what waits.
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
}

/// Takes and offers every waiting job whose agent is connected here.
async fn pick_up(controller: &Controller, me: &str) {
    let waiting = match controller.store.waiting_deliveries().await {
        Ok(waiting) => waiting,
        Err(error) => {
            tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), "cannot read the jobs waiting for delivery");
            return;
        }
    };
    for delivery in waiting {
        let Some(agent) = controller
            .registry
            .holding(&delivery.zone, &delivery.agent_name)
        else {
            continue;
        };
        let offer = match controller
            .store
            .take_delivery(&delivery.job_id, delivery.attempt, me, now_unix_ms())
            .await
        {
            Ok(Some(offer)) => offer,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(job_id = %delivery.job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot take a job waiting for delivery");
                continue;
            }
        };
        tracing::info!(job_id = %delivery.job_id, agent = %agent.name, "offering a job another controller recorded");
        let message = ControllerMessage {
            body: Some(controller_message::Body::Offer(offer)),
        };
        if agent.sender.send(Ok(message)).await.is_err() {
            // The requester's accept timeout settles the job: nothing ran.
            tracing::warn!(job_id = %delivery.job_id, agent = %agent.name, "agent gone before the delivered job could be offered");
        }
    }
}
