//! Events and results wait here until the controller acknowledges them, and
//! are replayed after a reconnect (DESIGN §4.3). The controller drops
//! duplicates by (job id, seq), so replaying too much is harmless.
//!
//! This outbox lives in memory: it survives a lost connection, not a restart
//! of the agent (the durable journal is a later step, see ARCHITECTURE.md).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

use pgrollout_shared::proto::{agent_message::Body, AgentMessage, InFlightJob};
use tokio::sync::mpsc;

#[derive(Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<AgentMessage>,
    running: BTreeSet<(String, u32)>,
    session: Option<mpsc::UnboundedSender<AgentMessage>>,
}

impl Outbox {
    /// Records a message and sends it on the current session, if any.
    pub fn push(&self, message: AgentMessage) {
        let mut inner = self.lock();
        if let Some(session) = &inner.session {
            // A closed session keeps the message pending for the next one.
            let _ = session.send(message.clone());
        }
        inner.pending.push_back(message);
    }

    /// Sends without keeping: heartbeats, accepts and declines, which mean
    /// nothing on a later connection.
    pub fn send_now(&self, message: AgentMessage) -> bool {
        let inner = self.lock();
        inner
            .session
            .as_ref()
            .is_some_and(|session| session.send(message).is_ok())
    }

    /// Forgets everything of `job_id` up to and including `seq`.
    pub fn acknowledge(&self, job_id: &str, seq: u64) {
        self.lock()
            .pending
            .retain(|message| match sequence_of(message) {
                Some((job, message_seq)) => job != job_id || message_seq > seq,
                None => true,
            });
    }

    pub fn job_started(&self, job_id: &str, attempt: u32) {
        self.lock().running.insert((job_id.to_owned(), attempt));
    }

    pub fn job_finished(&self, job_id: &str, attempt: u32) {
        self.lock().running.remove(&(job_id.to_owned(), attempt));
    }

    pub fn is_running(&self, job_id: &str, attempt: u32) -> bool {
        self.lock().running.contains(&(job_id.to_owned(), attempt))
    }

    /// Starts a session: every pending message is replayed on it, in order,
    /// and the jobs in flight are returned for the Hello.
    pub fn attach(&self, session: mpsc::UnboundedSender<AgentMessage>) -> Vec<AgentMessage> {
        let mut inner = self.lock();
        inner.session = Some(session);
        inner.pending.iter().cloned().collect()
    }

    pub fn detach(&self) {
        self.lock().session = None;
    }

    /// Jobs running or with unacknowledged messages, for the Hello.
    pub fn in_flight(&self) -> Vec<InFlightJob> {
        let inner = self.lock();
        let mut jobs: Vec<InFlightJob> = inner
            .running
            .iter()
            .map(|(job_id, attempt)| InFlightJob {
                job_id: job_id.clone(),
                attempt: *attempt,
                last_seq: 0,
                finished: false,
            })
            .collect();
        for message in &inner.pending {
            let Some(Body::Result(result)) = &message.body else {
                continue;
            };
            jobs.push(InFlightJob {
                job_id: result.job_id.clone(),
                attempt: result.attempt,
                last_seq: result.seq,
                finished: true,
            });
        }
        jobs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-edited
        // (every edit is one call), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn sequence_of(message: &AgentMessage) -> Option<(&str, u64)> {
    match &message.body {
        Some(Body::Event(event)) => Some((&event.job_id, event.seq)),
        Some(Body::Result(result)) => Some((&result.job_id, result.seq)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::{JobEvent, JobResult};

    fn event(job: &str, seq: u64) -> AgentMessage {
        AgentMessage {
            body: Some(Body::Event(JobEvent {
                job_id: job.into(),
                seq,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn unacknowledged_messages_are_replayed_in_order() {
        let outbox = Outbox::default();
        outbox.push(event("a", 1));
        outbox.push(event("b", 1));
        outbox.push(event("a", 2));
        outbox.push(AgentMessage {
            body: Some(Body::Result(JobResult {
                job_id: "a".into(),
                seq: 3,
                ..Default::default()
            })),
        });
        outbox.acknowledge("a", 2);
        let (tx, _rx) = mpsc::unbounded_channel();
        let replay = outbox.attach(tx);
        let sequences: Vec<_> = replay.iter().filter_map(sequence_of).collect();
        assert_eq!(sequences, vec![("b", 1), ("a", 3)]);
        let in_flight = outbox.in_flight();
        assert_eq!(in_flight.len(), 1);
        assert!(in_flight[0].finished);
    }
}
