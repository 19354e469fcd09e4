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
//!   produces — its events with their smoke reports and progress counts —,
//!   so the operator reads the same report; the follower is woken by the
//!   store's NOTIFY of the job's progress ([`relay_progress`], LISTEN),
//!   reading the store every [`FOLLOW_POLL`] without one;
//! - the picker ([`run`]): woken by NOTIFY (polling as the fallback), takes
//!   each waiting job for an agent it holds by compare-and-set, so the offer
//!   goes out once, and offers it on the agent's stream. Everything the
//!   agent reports is recorded by the link as for any job.
//!
//! Every kind of job goes one of two ways, chosen here and nowhere else:
//! a recorded job (a rollout's, a retry's) through [`offer_job`], whose
//! updates its rollout relays; a side-channel job (a watch's sample, a drift
//! scan, the audit anchors' read: no rollout, only an answer) through
//! [`ask`], whose answer the holding controller writes once in the store
//! (`side_deliveries`) when the agent is not connected here.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::{now_unix_ms, Job};
use pgrollout_shared::proto::{controller_message, ControllerMessage, JobOffer, JobResult};
use tokio::sync::mpsc;

use super::identity::dead_after_ms;
use super::registry::AgentHandle;
use super::router::JobUpdate;
use super::watch::Reply;
use super::Controller;
use crate::domain::agent_report::{ReportedEvent, ReportedResult};
use crate::store::{AgentStream, Delivery, SideAnswer, SideDelivery, StreamTarget};

/// How often the picker looks for waiting jobs without a notification.
const PICK_POLL: Duration = Duration::from_secs(1);

/// How often a job followed from another controller is read in the store
/// without a notification of its progress (NOTIFY wakes it at once).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// How long the holder of a side-channel job waits for the agent's report
/// past the job's own deadline.
const SIDE_GRACE: Duration = Duration::from_secs(5);

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

/// Offers a recorded job's attempt (its rollout and job rows written, its
/// offer stored) to the agent at `destination`: on the agent's stream when
/// it is connected here, else recorded for the controller holding it. The
/// receiver hears the router's updates either way. `Err` says why nothing
/// was offered (the caller settles the job: nothing ran).
pub async fn offer_job(
    controller: &Arc<Controller>,
    destination: &Destination,
    job_id: &str,
    attempt: u32,
    offer: JobOffer,
) -> Result<mpsc::UnboundedReceiver<JobUpdate>, String> {
    match destination {
        Destination::Local(agent) => {
            let updates = controller.router.subscribe(job_id, agent.session);
            let message = ControllerMessage {
                body: Some(controller_message::Body::Offer(offer)),
            };
            if agent.sender.send(Ok(message)).await.is_err() {
                controller.router.unsubscribe(job_id);
                return Err(format!(
                    "agent {} disconnected before the job could be offered",
                    agent.name
                ));
            }
            Ok(updates)
        }
        Destination::Remote(stream) => {
            request(controller, stream, job_id, attempt)
                .await
                .map_err(|error| {
                    format!(
                        "cannot record the job for controller {}, which holds agent {}: {}",
                        stream.controller_id,
                        stream.agent_name,
                        pgrollout_shared::errors::error_chain(&error)
                    )
                })
        }
    }
}

/// What came of a side-channel job.
#[derive(Debug)]
pub enum SideReply {
    /// The agent's result, as it wrote it.
    Result(Box<JobResult>),
    /// The agent declined the offer, saying why.
    Declined(String),
    /// The job never reached the agent, or its answer was lost: why.
    Lost(String),
    /// No answer within the time asked.
    TimedOut,
}

/// A side-channel job's answer and the agent that gave it.
#[derive(Debug)]
pub struct Answered {
    pub agent: String,
    pub reply: SideReply,
}

/// Offers side-channel `job` to an agent of `zone` serving `target` —
/// connected here, or through the controller holding its stream — and waits
/// up to `answer_within` for its answer. `None` when no agent was found
/// within `agent_wait`. Nothing is recorded but, for an agent elsewhere,
/// the job's passage through the store (`side_deliveries`), removed again.
pub async fn ask(
    controller: &Controller,
    zone: &str,
    target: &str,
    agent_wait: Duration,
    job: Job,
    answer_within: Duration,
) -> Option<Answered> {
    let destination = find_agent(controller, zone, target, agent_wait).await?;
    let job_id = job.id.clone();
    let offer: JobOffer = job.into();
    let reply = match &destination {
        Destination::Local(agent) => ask_here(controller, agent, offer, answer_within).await,
        Destination::Remote(stream) => {
            ask_through(controller, stream, &job_id, offer, answer_within).await
        }
    };
    Some(Answered {
        agent: destination.agent_name().to_owned(),
        reply,
    })
}

/// A side-channel job offered on a stream held here: its answer comes back
/// through the watches' side channel (`Watches::intercept`).
async fn ask_here(
    controller: &Controller,
    agent: &AgentHandle,
    offer: JobOffer,
    answer_within: Duration,
) -> SideReply {
    let job_id = offer.job_id.clone();
    let reply = controller.watches.expect(&job_id, &agent.zone, &agent.name);
    let message = ControllerMessage {
        body: Some(controller_message::Body::Offer(offer)),
    };
    if agent.sender.send(Ok(message)).await.is_err() {
        controller.watches.forget(&job_id);
        return SideReply::Lost(format!(
            "agent {} disconnected before it was asked",
            agent.name
        ));
    }
    let answer = tokio::time::timeout(answer_within, reply).await;
    controller.watches.forget(&job_id);
    match answer {
        Ok(Ok(Reply::Result(result))) => SideReply::Result(result),
        Ok(Ok(Reply::Declined(reason))) => SideReply::Declined(reason),
        Ok(Err(_)) | Err(_) => SideReply::TimedOut,
    }
}

/// A side-channel job for an agent another controller holds: recorded for
/// it with the offer, its answer read back from the store. The row is
/// removed at the end whatever happened, which withdraws it if no
/// controller took it yet.
async fn ask_through(
    controller: &Controller,
    stream: &AgentStream,
    job_id: &str,
    offer: JobOffer,
    answer_within: Duration,
) -> SideReply {
    let me = shared_id(controller).unwrap_or_default();
    let now = now_unix_ms();
    let expires_at =
        now.saturating_add(i64::try_from(answer_within.as_millis()).unwrap_or(i64::MAX));
    let delivery = SideDelivery {
        job_id: job_id.to_owned(),
        zone: stream.zone.clone(),
        agent_name: stream.agent_name.clone(),
    };
    if let Err(error) = controller
        .store
        .request_side_delivery(
            &delivery,
            prost::Message::encode_to_vec(&offer),
            &me,
            now,
            expires_at,
        )
        .await
    {
        return SideReply::Lost(format!(
            "cannot record the job for controller {}, which holds agent {}: {}",
            stream.controller_id,
            stream.agent_name,
            pgrollout_shared::errors::error_chain(&error)
        ));
    }
    tracing::info!(job_id, agent = %stream.agent_name, via = %stream.controller_id, "side-channel job waits for the controller holding its agent");
    let deadline = tokio::time::Instant::now() + answer_within;
    let following = Following::new(controller, job_id);
    let reply = loop {
        match controller.store.side_answer(job_id).await {
            Ok(Some(SideAnswer::Result(result))) => break SideReply::Result(result),
            Ok(Some(SideAnswer::Declined(reason))) => break SideReply::Declined(reason),
            Ok(Some(SideAnswer::Failed(why))) => break SideReply::Lost(why),
            Ok(None) => {}
            // Read again at the next tick: the store may be restarting.
            Err(error) => {
                tracing::warn!(job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot read the side-channel job's answer; reading again")
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break SideReply::TimedOut;
        }
        let _ = tokio::time::timeout_at(deadline, following.changed()).await;
    };
    drop(following);
    if let Err(error) = controller.store.end_side_delivery(job_id).await {
        // Expired, it is never offered; the pickers delete it later.
        tracing::warn!(job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot remove the side-channel job's row");
    }
    reply
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
    let following = Following::new(&controller, &job_id);
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            following.changed().await;
        }
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

/// A job followed in the store: woken by the store's announcement of its
/// progress, or after [`FOLLOW_POLL`] without one; unregistered on drop.
struct Following<'a> {
    controller: &'a Controller,
    job_id: &'a str,
    changed: Arc<tokio::sync::Notify>,
}

impl<'a> Following<'a> {
    fn new(controller: &'a Controller, job_id: &'a str) -> Self {
        let changed = controller.router.follow_in_store(job_id);
        Following {
            controller,
            job_id,
            changed,
        }
    }

    /// Returns when the job's progress may have changed.
    async fn changed(&self) {
        let _ = tokio::time::timeout(FOLLOW_POLL, self.changed.notified()).await;
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.controller.router.stop_following_in_store(self.job_id);
    }
}

/// Wakes the jobs followed here when the store announces their progress
/// (LISTEN); runs until the process stops, listening again whenever the
/// connection ends — each time telling every follower to read again, as an
/// announcement may have been missed meanwhile.
async fn relay_progress(controller: Arc<Controller>) {
    loop {
        match controller.store.listen_for_progress().await {
            None => return,
            Some(Ok(mut notes)) => {
                controller.router.progress_may_have_changed();
                while let Some(job_id) = notes.recv().await {
                    controller.router.progress_changed(&job_id);
                }
            }
            Some(Err(error)) => {
                tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), "cannot listen for jobs' progress; followers poll")
            }
        }
        controller.router.progress_may_have_changed();
        tokio::time::sleep(PICK_POLL).await;
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
    let targets: Vec<StreamTarget> = agent
        .targets
        .iter()
        .map(|t| StreamTarget {
            name: t.name.clone(),
            labels: t.labels.clone(),
        })
        .collect();
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
    tokio::spawn(relay_progress(controller.clone()));
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
            pick_up_side(&controller, &me).await;
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

/// Takes and offers every waiting side-channel job whose agent is connected
/// here; a task per job writes the agent's answer to the store once.
async fn pick_up_side(controller: &Arc<Controller>, me: &str) {
    let now = now_unix_ms();
    let waiting = match controller.store.waiting_side_deliveries(now).await {
        Ok(waiting) => waiting,
        Err(error) => {
            tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), "cannot read the side-channel jobs waiting for delivery");
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
            .take_side_delivery(&delivery.job_id, me, now)
            .await
        {
            Ok(Some(offer)) => offer,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(job_id = %delivery.job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot take a side-channel job waiting for delivery");
                continue;
            }
        };
        tracing::info!(job_id = %delivery.job_id, agent = %agent.name, "offering a side-channel job another controller recorded");
        // The agent's own deadline bounds the wait, plus its report's grace.
        let within = Duration::from_millis(
            u64::try_from(offer.deadline_unix_ms.saturating_sub(now)).unwrap_or(0),
        ) + SIDE_GRACE;
        let controller = controller.clone();
        tokio::spawn(async move {
            let answer = match ask_here(&controller, &agent, offer, within).await {
                SideReply::Result(result) => SideAnswer::Result(result),
                SideReply::Declined(reason) => SideAnswer::Declined(reason),
                SideReply::Lost(why) => SideAnswer::Failed(why),
                SideReply::TimedOut => SideAnswer::Failed(format!(
                    "agent {} did not answer within {}",
                    agent.name,
                    humantime::format_duration(within)
                )),
            };
            if let Err(error) = controller
                .store
                .record_side_answer(&delivery.job_id, &answer)
                .await
            {
                tracing::warn!(job_id = %delivery.job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot record the side-channel job's answer");
            }
        });
    }
}
