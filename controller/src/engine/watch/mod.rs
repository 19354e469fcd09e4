//! Post-deploy watches (issue 7; SEED.md's `create-alert.sh` and "Monitor
//! (24h)"): the controller keeps each watch in its store, and a task per
//! live watch has the zone's agent take a small stateless `watch_sample`
//! job every interval. The task compares the sample with the watch's
//! pre-deploy baseline (`assess.rs`), records the verdict, and tells the
//! environment's channels when a routine got slower by the threshold, its
//! calls started failing, or the watch cannot see.
//!
//! A sample is not a rollout: it records no rollout, job or events. Its
//! offer goes straight to an agent of the zone, and the agent link hands its
//! answer here ([`Watches::intercept`]) instead of to the rollout path.
//!
//! - `lifecycle.rs`: create (baseline first), cancel, and the watches'
//!   leader picking up every live watch (issue 18: only the controller
//!   holding the watches' lease samples, whichever controller created it);
//! - `sample.rs`: one sample, offered to an agent and awaited;
//! - `run.rs`: the task of one watch;
//! - `report.rs`: a stored watch as the operator sees it.

pub mod assess;
mod lifecycle;
mod report;
mod run;
mod sample;

use std::collections::HashMap;
use std::sync::Mutex;

use pgrollout_shared::proto::JobResult;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::domain::agent_report::AgentReport;

pub use lifecycle::{cancel, create, lead, CreateWatch};
pub use report::status_of;

/// The answer to one sample offer. The audit anchors' read-only job
/// (`engine/audit_anchors.rs`) travels the same side channel.
#[derive(Debug)]
pub(crate) enum Reply {
    Result(Box<JobResult>),
    Declined(String),
}

/// A sample offered and not answered yet.
struct Outstanding {
    zone: String,
    agent: String,
    reply: oneshot::Sender<Reply>,
}

/// The watches' in-memory side: sample offers awaiting their answer and the
/// task of each live watch. Everything else is in the store.
#[derive(Default)]
pub struct Watches {
    outstanding: Mutex<HashMap<String, Outstanding>>,
    tasks: Mutex<HashMap<String, AbortHandle>>,
    /// Wakes this controller's watches' leader when a watch was created
    /// here; the leader also looks for watches created through other
    /// controllers every `lifecycle::PICK_UP` (issue 18).
    pub(crate) created: tokio::sync::Notify,
}

/// What the agent link should do with a message it received.
pub enum Intercepted {
    /// Not about a sample: handle it as usual.
    NotASample,
    /// Taken; acknowledge this (job, seq) so the agent's outbox lets it go.
    Acknowledge {
        job_id: String,
        attempt: u32,
        seq: u64,
    },
    /// Taken; nothing to send back.
    Taken,
}

impl Watches {
    /// Takes the messages about sample jobs in flight, from an agent of the
    /// zone and name the sample was offered to (a reconnected agent replays
    /// on a new session, so the session itself is not compared).
    pub fn intercept(&self, zone: &str, agent: &str, report: &AgentReport) -> Intercepted {
        let job_id = match report {
            AgentReport::Accepted(job) | AgentReport::Declined { job, .. } => &job.id,
            AgentReport::Event(event) => &event.job.id,
            AgentReport::Result(result) => &result.job.id,
            _ => return Intercepted::NotASample,
        };
        let mut outstanding = self.lock_outstanding();
        let ours = outstanding
            .get(job_id)
            .is_some_and(|o| o.zone == zone && o.agent == agent);
        if !ours {
            return Intercepted::NotASample;
        }
        match report {
            AgentReport::Event(event) => Intercepted::Acknowledge {
                job_id: event.job.id.clone(),
                attempt: event.job.attempt,
                seq: event.seq,
            },
            AgentReport::Declined { job, reason } => {
                if let Some(waiting) = outstanding.remove(&job.id) {
                    let _ = waiting.reply.send(Reply::Declined(reason.clone()));
                }
                Intercepted::Taken
            }
            AgentReport::Result(result) => {
                if let Some(waiting) = outstanding.remove(&result.job.id) {
                    // Relayed whole, as the agent wrote it: the sample's
                    // reader (`sample.rs`) takes its watch sample from it.
                    let _ = waiting
                        .reply
                        .send(Reply::Result(Box::new(result.wire().clone())));
                }
                Intercepted::Acknowledge {
                    job_id: result.job.id.clone(),
                    attempt: result.job.attempt,
                    seq: result.seq,
                }
            }
            // Accepted: the sample runs; its result follows.
            _ => Intercepted::Taken,
        }
    }

    pub(crate) fn expect(&self, job_id: &str, zone: &str, agent: &str) -> oneshot::Receiver<Reply> {
        let (reply, receiver) = oneshot::channel();
        self.lock_outstanding().insert(
            job_id.to_owned(),
            Outstanding {
                zone: zone.to_owned(),
                agent: agent.to_owned(),
                reply,
            },
        );
        receiver
    }

    pub(crate) fn forget(&self, job_id: &str) {
        self.lock_outstanding().remove(job_id);
    }

    fn track(&self, watch_id: &str, task: AbortHandle) {
        let mut tasks = self.lock_tasks();
        tasks.retain(|_, handle| !handle.is_finished());
        if let Some(previous) = tasks.insert(watch_id.to_owned(), task) {
            previous.abort();
        }
    }

    /// Whether a task of this controller samples `watch_id` now.
    fn is_running(&self, watch_id: &str) -> bool {
        self.lock_tasks()
            .get(watch_id)
            .is_some_and(|task| !task.is_finished())
    }

    /// Stops every watch task of this controller (it lost the watches'
    /// lease, issue 18): the new leader resumes them from the store.
    pub fn stop_all(&self) {
        for (_, task) in self.lock_tasks().drain() {
            task.abort();
        }
    }

    fn stop(&self, watch_id: &str) {
        if let Some(task) = self.lock_tasks().remove(watch_id) {
            task.abort();
        }
    }

    fn lock_outstanding(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outstanding>> {
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}
