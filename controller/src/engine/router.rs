//! Where each running job's updates go: the rollout waiting on it. The agent
//! link publishes; the rollout subscribes. Persisting happens in the link,
//! before publishing, so a vanished CLI loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::agent_report::{ReportedEvent, ReportedResult};
use tokio::sync::{mpsc, Notify};

/// What a rollout hears about its job.
#[derive(Debug)]
pub enum JobUpdate {
    Accepted,
    Declined {
        reason: String,
    },
    Event(ReportedEvent),
    /// Boxed: a result is far larger than the other updates.
    Finished(Box<ReportedResult>),
    /// The agent sent a result that failed its check: the job is `unknown`
    /// (`engine/malformed_report.rs`); this is why.
    Malformed {
        message: String,
    },
    /// Something the operator following the job should read (an event of
    /// the agent's that was dropped as malformed).
    Notice {
        message: String,
    },
    /// The agent's session ended before the job's result arrived.
    AgentLost {
        agent: String,
    },
    /// The agent reconnected and said it still runs the job.
    Reattached {
        agent: String,
    },
}

struct Subscription {
    session: u64,
    sender: mpsc::UnboundedSender<JobUpdate>,
}

#[derive(Default)]
pub struct JobRouter {
    subscriptions: Mutex<HashMap<String, Subscription>>,
    /// Jobs followed in the store (issue 18: their agent is on another
    /// controller), each woken when the store announces its progress.
    followed_in_store: Mutex<HashMap<String, Arc<Notify>>>,
}

impl JobRouter {
    /// Subscribes to a job about to be offered on `session`.
    pub fn subscribe(&self, job_id: &str, session: u64) -> mpsc::UnboundedReceiver<JobUpdate> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock()
            .insert(job_id.to_owned(), Subscription { session, sender });
        receiver
    }

    pub fn unsubscribe(&self, job_id: &str) {
        self.lock().remove(job_id);
    }

    /// `false` when no rollout here follows the job (one delivered for
    /// another controller, whose rollout follows it in the store).
    pub fn publish(&self, job_id: &str, update: JobUpdate) -> bool {
        match self.lock().get(job_id) {
            Some(subscription) => subscription.sender.send(update).is_ok(),
            None => false,
        }
    }

    /// The job now runs on `session` (its agent reconnected); tells the
    /// rollout following it. `false` if nobody follows the job.
    pub fn reattach(&self, job_id: &str, session: u64, agent: &str) -> bool {
        let mut subscriptions = self.lock();
        let Some(subscription) = subscriptions.get_mut(job_id) else {
            return false;
        };
        subscription.session = session;
        let _ = subscription.sender.send(JobUpdate::Reattached {
            agent: agent.to_owned(),
        });
        true
    }

    /// Tells every job running on a lost session; returns their ids.
    pub fn session_lost(&self, session: u64, agent: &str) -> Vec<String> {
        let subscriptions = self.lock();
        subscriptions
            .iter()
            .filter(|(_, s)| s.session == session)
            .map(|(job_id, s)| {
                let _ = s.sender.send(JobUpdate::AgentLost {
                    agent: agent.to_owned(),
                });
                job_id.clone()
            })
            .collect()
    }

    /// Registers a job followed in the store; the `Notify` is woken (a
    /// permit kept if nobody waits yet) each time its progress changes.
    pub fn follow_in_store(&self, job_id: &str) -> Arc<Notify> {
        self.lock_followed()
            .entry(job_id.to_owned())
            .or_default()
            .clone()
    }

    pub fn stop_following_in_store(&self, job_id: &str) {
        self.lock_followed().remove(job_id);
    }

    /// The store announced progress of `job_id`.
    pub fn progress_changed(&self, job_id: &str) {
        if let Some(changed) = self.lock_followed().get(job_id) {
            changed.notify_one();
        }
    }

    /// Announcements may have been missed (the listening connection was
    /// down): every job followed in the store reads it again.
    pub fn progress_may_have_changed(&self) {
        for changed in self.lock_followed().values() {
            changed.notify_one();
        }
    }

    fn lock_followed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.followed_in_store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
