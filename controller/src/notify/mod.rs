//! Notifications (SEED.md "Notification Integration"): when a deploy,
//! rollback, disable or enable settles, or a rollout needs approval, each
//! channel routed from its environment gets a message — Slack
//! incoming-webhook JSON, a generic JSON webhook, or a plain-text email over
//! SMTP.
//!
//! A handle plus a task: callers hand the [`Notifier`] a job id and return
//! at once (a bounded queue; when it is full the event is dropped and
//! audited, never waited for). The task reads the rollout from the store,
//! builds the event and delivers it to each channel on its own task
//! (`deliver.rs`: timeouts, retries with backoff, `notification.failed`
//! audited at the end). A failing channel therefore never fails or slows a
//! rollout, and one slow channel does not hold up the others.
//!
//! A rollout first settled as `unknown` (its agent vanished) is announced
//! again when the agent reports its real outcome. Deliveries to one channel
//! may arrive out of order when retries overlap.
//! The channels and routes are read at start; changing them needs a
//! restart.

mod deliver;
pub mod drift_event;
mod email;
pub mod event;
pub mod failures;
mod secret;
mod slack;
pub mod watch_event;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use self::deliver::{Channel, Courier};
pub use self::event::ApprovalNeeded;
use self::event::{Event, EMERGENCY_ACTION};
use crate::config::notifications::ChannelKind;
use crate::config::ControllerConfig;
use crate::store::{AuditEntry, Store};

/// Deliveries in flight at once, across channels; past this the queue
/// fills, and then new events are dropped.
const MAX_CONCURRENT_DELIVERIES: usize = 32;

/// Something to tell the channels about.
enum Notice {
    /// A job's result (or its abandonment) was recorded.
    JobSettled { job_id: String },
    /// A deploy was parked until approvers decide (`approval_needed`).
    ApprovalNeeded(ApprovalNeeded),
    /// An event built by its source (post-deploy watches, drift scans).
    Ready(Event),
}

/// The handle the engine and the API call. Cheap, never blocks.
pub struct Notifier {
    /// `None` when no `[notifications]` are configured.
    queue: Option<mpsc::Sender<Notice>>,
    store: Store,
}

/// Where each environment's events go.
struct Routes {
    channels: BTreeMap<String, Vec<Arc<Channel>>>,
    /// SEED.md's `notification_channel` per environment, for Slack.
    slack_channels: BTreeMap<String, String>,
}

impl Notifier {
    /// Starts the delivery task when the config has `[notifications]`. Must
    /// run inside the runtime, after the rustls provider is installed.
    pub fn start(config: &ControllerConfig, store: Store) -> Notifier {
        let Some(settings) = &config.notifications else {
            return Notifier { queue: None, store };
        };
        let by_name: BTreeMap<&String, Arc<Channel>> = settings
            .channels
            .iter()
            .map(|(name, channel)| {
                failures::declare_notification_channel(name);
                let channel = Channel {
                    name: name.clone(),
                    config: channel.clone(),
                };
                (name, Arc::new(channel))
            })
            .collect();
        let routes = Routes {
            channels: settings
                .routes
                .iter()
                .map(|(environment, names)| {
                    let channels = names.iter().filter_map(|n| by_name.get(n).cloned());
                    (environment.clone(), channels.collect())
                })
                .collect(),
            slack_channels: config
                .environments
                .iter()
                .filter_map(|(name, e)| Some((name.clone(), e.notification_channel.clone()?)))
                .collect(),
        };
        let (sender, receiver) = mpsc::channel(settings.queue);
        let courier = Courier::new(settings, store.clone());
        tokio::spawn(dispatch(receiver, Arc::new(routes), Arc::new(courier)));
        Notifier {
            queue: Some(sender),
            store,
        }
    }

    /// A job's result, or its abandonment, was just recorded: tell the
    /// environment's channels how the rollout ended (deploy, rollback,
    /// disable and enable; smoke tests and history are not announced).
    pub fn rollout_finished(&self, job_id: &str) {
        self.enqueue(Notice::JobSettled {
            job_id: job_id.to_owned(),
        });
    }

    /// A rollout stopped at the `approval` gate: ask the environment's
    /// channels for approvers.
    pub fn approval_needed(&self, request: ApprovalNeeded) {
        self.enqueue(Notice::ApprovalNeeded(request));
    }

    /// An event its source built: a post-deploy watch raised an alert,
    /// went blind or recovered (`watch_event::event`); a drift scan found
    /// routines changed outside pgrollout that no earlier scan had seen
    /// (`drift_event::event`).
    pub fn announce(&self, event: Event) {
        self.enqueue(Notice::Ready(event));
    }

    fn enqueue(&self, notice: Notice) {
        let Some(queue) = &self.queue else { return };
        let Err(error) = queue.try_send(notice) else {
            return;
        };
        let what = match error.into_inner() {
            Notice::JobSettled { job_id } => format!("the result of job {job_id}"),
            Notice::ApprovalNeeded(request) => {
                format!("the approval request of rollout {}", request.rollout_id)
            }
            Notice::Ready(event) => format!("event {} ({})", event.name, event.text()),
        };
        tracing::error!(%what, "notification queue full; event dropped");
        let store = self.store.clone();
        // Audited on its own task: the caller is recording a rollout's result.
        tokio::spawn(async move {
            let entry = AuditEntry {
                actor: "controller".to_owned(),
                action: "notification.dropped".to_owned(),
                outcome: "failed".to_owned(),
                details: format!("notification queue full: nothing was sent about {what}"),
                ..Default::default()
            };
            if let Err(error) = store.audit(entry).await {
                tracing::error!(error = %anyhow::Error::from(error), "auditing a dropped notification failed");
            }
        });
    }
}

/// Turns notices into events and starts a delivery per routed channel.
async fn dispatch(mut queue: mpsc::Receiver<Notice>, routes: Arc<Routes>, courier: Arc<Courier>) {
    let in_flight = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    while let Some(notice) = queue.recv().await {
        let event = match notice {
            Notice::JobSettled { job_id } => match event_of_job(&courier.store, &job_id).await {
                Some(event) => event,
                None => continue,
            },
            Notice::ApprovalNeeded(request) => Event::approval_needed(request),
            Notice::Ready(event) => event,
        };
        let Some(channels) = routes.channels.get(&event.environment) else {
            continue;
        };
        let event = Arc::new(event);
        let slack_channel = routes.slack_channels.get(&event.environment);
        for channel in channels {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let body = channel.payload(&event, slack_channel.map(String::as_str));
            let (courier, channel, event) = (courier.clone(), channel.clone(), event.clone());
            tokio::spawn(async move {
                courier.deliver(channel, event, body).await;
                drop(permit);
            });
        }
    }
}

/// The event for the rollout job `job_id` belongs to; `None` when there is
/// nothing to announce or the store cannot say (logged).
async fn event_of_job(store: &Store, job_id: &str) -> Option<Event> {
    let read = async {
        let Some(status) = store.rollout_of_job(job_id).await? else {
            return Ok(None);
        };
        let emergency = match status.kind.as_str() {
            "rollback" => {
                store
                    .audit_details_of(&status.rollout_id, EMERGENCY_ACTION)
                    .await?
            }
            _ => None,
        };
        Ok::<_, crate::store::StoreError>(Event::from_rollout(&status, emergency.as_deref()))
    };
    match read.await {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), %job_id, "reading the rollout to notify about failed; no notification sent");
            None
        }
    }
}

/// Checks at start that every channel's URL can be read (a missing secret
/// fails the start loudly instead of every later delivery quietly).
pub fn check_channels(config: &ControllerConfig) -> anyhow::Result<()> {
    let Some(settings) = &config.notifications else {
        return Ok(());
    };
    for (name, channel) in &settings.channels {
        let found = match channel.kind {
            ChannelKind::Email => secret::smtp_password(channel).map(drop),
            _ => secret::resolve(channel)
                .and_then(|_| secret::signing_key(channel))
                .map(drop),
        };
        found.map_err(|error| {
            anyhow::anyhow!(
                "notifications.channels.{name}: {:#}",
                anyhow::Error::from(error)
            )
        })?;
    }
    Ok(())
}
