//! Events and results wait here until the controller acknowledges them, and
//! are replayed after a reconnect or a restart (DESIGN §4.3). The controller
//! drops duplicates by (job id, attempt, seq), so replaying too much is
//! harmless; sending something that is not yet on disk is not, so nothing is
//! sent before its journal record is durable (see `journal.rs`).
//!
//! The outbox also knows which jobs run, and when the controller was last
//! heard from: the fence of a job's lease reads it.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgrollout_shared::proto::{agent_message::Body, Ack, AgentMessage, InFlightJob, JobOffer};
use tokio::sync::{mpsc, oneshot};

mod journal;

use journal::{Journal, Record};

mod drain;

/// A job the agent had started when it last stopped, without a result.
pub struct Interrupted {
    pub offer: JobOffer,
    /// The last event sequence number it had produced.
    pub last_seq: u64,
}

pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// `None` only in unit tests: every real agent journals.
    journal: Option<Journal>,
    /// Ticks whenever jobs, pending messages or the session change: a
    /// draining agent waits on it.
    changed: tokio::sync::watch::Sender<()>,
}

type JobKey = (String, u32);

struct Inner {
    pending: VecDeque<AgentMessage>,
    /// Running jobs, with the highest sequence number produced so far.
    running: BTreeMap<JobKey, u64>,
    /// Records handed to the journal and not yet on disk.
    unsettled: usize,
    session: Option<mpsc::UnboundedSender<AgentMessage>>,
    /// When a message from the controller last arrived.
    last_contact: Instant,
    /// Stopping: no new job is taken (`drain.rs`).
    draining: bool,
    /// Each running job's deadline, which bounds a drain.
    deadlines: BTreeMap<JobKey, std::time::SystemTime>,
    /// The controller address of the session, or of the last one (issue 18:
    /// the agent may have several and moves between them).
    controller: Option<String>,
    /// Sessions that began on another controller than the one before.
    failovers: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            pending: VecDeque::new(),
            running: BTreeMap::new(),
            unsettled: 0,
            session: None,
            last_contact: Instant::now(),
            draining: false,
            deadlines: BTreeMap::new(),
            controller: None,
            failovers: 0,
        }
    }
}

impl Outbox {
    /// Opens the journal at `path`: unacknowledged messages become pending
    /// again, and jobs started without a result are returned for
    /// resolution. The file is rewritten to hold just that.
    pub fn open(path: &Path) -> std::io::Result<(Outbox, Vec<Interrupted>)> {
        let replayed = journal::read(path)?;
        if let Some(damage) = &replayed.damage {
            tracing::error!(journal = %path.display(), %damage, "the agent journal is damaged; replaying what precedes the damage");
        }
        let state = settle(replayed.records);
        let mut keep: Vec<Record> = state
            .interrupted
            .iter()
            .map(|job| Record::Started(job.offer.clone()))
            .collect();
        keep.extend(state.pending.iter().cloned().map(Record::Message));
        let journal = Journal::open(path, &keep)?;
        let mut inner = Inner {
            pending: state.pending.into(),
            ..Inner::default()
        };
        for job in &state.interrupted {
            let key = (job.offer.job_id.clone(), job.offer.attempt);
            inner.deadlines.insert(key.clone(), deadline_of(&job.offer));
            inner.running.insert(key, job.last_seq);
        }
        let outbox = Outbox {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                journal: Some(journal),
                changed: tokio::sync::watch::channel(()).0,
            }),
        };
        Ok((outbox, state.interrupted))
    }

    /// An outbox without a journal, for tests of the link alone.
    #[cfg(test)]
    pub fn in_memory() -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                journal: None,
                changed: tokio::sync::watch::channel(()).0,
            }),
        }
    }

    /// Journals a message, then keeps it and sends it on the current
    /// session, if any, once it is durable.
    pub fn push(&self, message: AgentMessage) {
        let mut inner = self.shared.lock();
        if let Some((job, seq)) = sequence_of(&message) {
            if let Some(last) = inner.running.get_mut(&job) {
                *last = (*last).max(seq);
            }
        }
        let Some(journal) = &self.shared.journal else {
            drop(inner);
            self.shared.deliver(message);
            return;
        };
        inner.unsettled += 1;
        let shared = self.shared.clone();
        journal.append_message(message, true, move |message| {
            shared.lock().unsettled -= 1;
            shared.deliver(message);
        });
    }

    /// Sends without keeping: heartbeats, accepts, declines and relayed
    /// spans, which mean nothing on a later connection.
    pub fn send_now(&self, message: AgentMessage) -> bool {
        let inner = self.shared.lock();
        inner
            .session
            .as_ref()
            .is_some_and(|session| session.send(message).is_ok())
    }

    /// Forgets everything of (job, attempt) up to and including `seq`
    /// (attempt 0: any attempt, from a controller that does not say).
    pub fn acknowledge(&self, ack: Ack) {
        let mut inner = self.shared.lock();
        let before = inner.pending.len();
        inner.pending.retain(|message| match sequence_of(message) {
            Some(((job, attempt), seq)) => {
                job != ack.job_id || (ack.attempt != 0 && attempt != ack.attempt) || seq > ack.seq
            }
            None => true,
        });
        if inner.pending.len() == before {
            return;
        }
        if let Some(journal) = &self.shared.journal {
            // Losing this record only means a harmless replay: no fsync.
            journal.append(&Record::Acked(ack), false, None);
        }
        self.shared.truncate_if_settled(&inner);
    }

    /// Records that a job is starting. `None` if it already runs (a
    /// duplicate offer); otherwise a receiver that fires once the start is
    /// on disk, so that a restart will know the job was begun.
    pub fn begin_job(&self, offer: &JobOffer) -> Option<oneshot::Receiver<()>> {
        let mut inner = self.shared.lock();
        let key = (offer.job_id.clone(), offer.attempt);
        if inner.running.contains_key(&key) {
            return None;
        }
        inner.deadlines.insert(key.clone(), deadline_of(offer));
        inner.running.insert(key, 0);
        let (durable, receiver) = oneshot::channel();
        match &self.shared.journal {
            Some(journal) => {
                inner.unsettled += 1;
                let shared = self.shared.clone();
                journal.append_started(
                    offer,
                    Some(Box::new(move || {
                        shared.lock().unsettled -= 1;
                        let _ = durable.send(());
                    })),
                );
            }
            None => {
                let _ = durable.send(());
            }
        }
        Some(receiver)
    }

    pub fn job_finished(&self, job_id: &str, attempt: u32) {
        let mut inner = self.shared.lock();
        let key = (job_id.to_owned(), attempt);
        inner.running.remove(&key);
        inner.deadlines.remove(&key);
        self.shared.truncate_if_settled(&inner);
    }

    pub fn is_running(&self, job_id: &str, attempt: u32) -> bool {
        self.shared
            .lock()
            .running
            .contains_key(&(job_id.to_owned(), attempt))
    }

    /// The unacknowledged result of (job, attempt), if it finished.
    pub fn pending_result(&self, job_id: &str, attempt: u32) -> Option<AgentMessage> {
        self.shared
            .lock()
            .pending
            .iter()
            .find(|m| {
                matches!(&m.body, Some(Body::Result(r)) if r.job_id == job_id && r.attempt == attempt)
            })
            .cloned()
    }

    /// Starts a session with the controller at `address`: every pending
    /// message is replayed on it, in order, whichever controller it is (they
    /// share one store, which drops what it already has).
    pub fn attach(
        &self,
        session: mpsc::UnboundedSender<AgentMessage>,
        address: &str,
    ) -> Vec<AgentMessage> {
        let mut inner = self.shared.lock();
        if inner
            .controller
            .as_deref()
            .is_some_and(|before| before != address)
        {
            inner.failovers += 1;
        }
        inner.controller = Some(address.to_owned());
        inner.session = Some(session);
        inner.last_contact = Instant::now();
        self.shared.changed.send_replace(());
        inner.pending.iter().cloned().collect()
    }

    /// Whether a session with the controller is up (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().session.is_some()
    }

    /// The controller the link is on now, `None` while it is down.
    pub fn connected_to(&self) -> Option<String> {
        let inner = self.shared.lock();
        inner.session.as_ref().and(inner.controller.clone())
    }

    /// The controller of the current or the last session (empty before the
    /// first): where a job that is running now came from.
    pub fn last_controller(&self) -> String {
        self.shared.lock().controller.clone().unwrap_or_default()
    }

    /// How many sessions began on another controller than the one before.
    pub fn failovers(&self) -> u64 {
        self.shared.lock().failovers
    }

    pub fn detach(&self) {
        self.shared.lock().session = None;
        self.shared.changed.send_replace(());
    }

    /// The controller spoke: the lease clock restarts.
    pub fn touch(&self) {
        self.shared.lock().last_contact = Instant::now();
    }

    /// How long since the controller was last heard from.
    pub fn silent_for(&self) -> Duration {
        self.shared.lock().last_contact.elapsed()
    }

    /// Jobs running or with unacknowledged messages, for the Hello.
    pub fn in_flight(&self) -> Vec<InFlightJob> {
        let inner = self.shared.lock();
        let mut jobs: Vec<InFlightJob> = inner
            .running
            .iter()
            .map(|((job_id, attempt), last_seq)| InFlightJob {
                job_id: job_id.clone(),
                attempt: *attempt,
                last_seq: *last_seq,
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
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-edited
        // (every edit is one call), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn deliver(&self, message: AgentMessage) {
        let mut inner = self.lock();
        if let Some(session) = &inner.session {
            // A closed session keeps the message pending for the next one.
            let _ = session.send(message.clone());
        }
        inner.pending.push_back(message);
        self.changed.send_replace(());
    }

    /// When nothing is running, pending or on its way to disk, the journal
    /// holds nothing a restart would need: start it afresh, so it stays small.
    fn truncate_if_settled(&self, inner: &Inner) {
        self.changed.send_replace(());
        if inner.pending.is_empty() && inner.running.is_empty() && inner.unsettled == 0 {
            if let Some(journal) = &self.journal {
                journal.truncate();
            }
        }
    }
}

/// What a replayed journal means: messages not acknowledged, and jobs
/// started without a result.
struct Settled {
    pending: Vec<AgentMessage>,
    interrupted: Vec<Interrupted>,
}

fn settle(records: Vec<Record>) -> Settled {
    let mut started: BTreeMap<JobKey, JobOffer> = BTreeMap::new();
    let mut last_seq: BTreeMap<JobKey, u64> = BTreeMap::new();
    let mut finished: std::collections::BTreeSet<JobKey> = Default::default();
    let mut messages: Vec<AgentMessage> = Vec::new();
    let mut acked: BTreeMap<JobKey, u64> = BTreeMap::new();
    for record in records {
        match record {
            Record::Started(offer) => {
                started.insert((offer.job_id.clone(), offer.attempt), offer);
            }
            Record::Message(message) => {
                if let Some((key, seq)) = sequence_of(&message) {
                    let last = last_seq.entry(key.clone()).or_default();
                    *last = (*last).max(seq);
                    if matches!(message.body, Some(Body::Result(_))) {
                        finished.insert(key);
                    }
                }
                messages.push(message);
            }
            Record::Acked(ack) => {
                let entry = acked.entry((ack.job_id, ack.attempt)).or_default();
                *entry = (*entry).max(ack.seq);
            }
        }
    }
    let pending = messages
        .into_iter()
        .filter(|message| match sequence_of(message) {
            Some(((job, attempt), seq)) => {
                let covered = |a: u32| acked.get(&(job.clone(), a)).is_some_and(|&s| seq <= s);
                !(covered(attempt) || covered(0))
            }
            None => false,
        })
        .collect();
    let interrupted = started
        .into_iter()
        .filter(|(key, _)| !finished.contains(key))
        .map(|(key, offer)| Interrupted {
            last_seq: last_seq.get(&key).copied().unwrap_or(0),
            offer,
        })
        .collect();
    Settled {
        pending,
        interrupted,
    }
}

/// A job offer's deadline (`deadline_unix_ms`) as a time.
fn deadline_of(offer: &JobOffer) -> std::time::SystemTime {
    let millis = u64::try_from(offer.deadline_unix_ms).unwrap_or(0);
    std::time::UNIX_EPOCH + Duration::from_millis(millis)
}

fn sequence_of(message: &AgentMessage) -> Option<(JobKey, u64)> {
    match &message.body {
        Some(Body::Event(event)) => Some(((event.job_id.clone(), event.attempt), event.seq)),
        Some(Body::Result(result)) => Some(((result.job_id.clone(), result.attempt), result.seq)),
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
                attempt: 1,
                seq,
                ..Default::default()
            })),
        }
    }

    fn result(job: &str, seq: u64) -> AgentMessage {
        AgentMessage {
            body: Some(Body::Result(JobResult {
                job_id: job.into(),
                attempt: 1,
                seq,
                ..Default::default()
            })),
        }
    }

    fn ack(job: &str, seq: u64) -> Ack {
        Ack {
            job_id: job.into(),
            seq,
            attempt: 1,
        }
    }

    fn offer(job: &str) -> JobOffer {
        JobOffer {
            job_id: job.into(),
            attempt: 1,
            ..Default::default()
        }
    }

    fn sequences(messages: &[AgentMessage]) -> Vec<(String, u64)> {
        messages
            .iter()
            .filter_map(sequence_of)
            .map(|((job, _), seq)| (job, seq))
            .collect()
    }

    /// Waits until every record pushed so far is on disk and delivered.
    fn settled(outbox: &Outbox) {
        while outbox.shared.lock().unsettled > 0 {
            std::thread::yield_now();
        }
    }

    #[test]
    fn unacknowledged_messages_are_replayed_in_order() {
        let outbox = Outbox::in_memory();
        outbox.push(event("a", 1));
        outbox.push(event("b", 1));
        outbox.push(event("a", 2));
        outbox.push(result("a", 3));
        outbox.acknowledge(ack("a", 2));
        let (tx, _rx) = mpsc::unbounded_channel();
        let replay = outbox.attach(tx, "https://a:7411");
        assert_eq!(sequences(&replay), vec![("b".into(), 1), ("a".into(), 3)]);
        let in_flight = outbox.in_flight();
        assert_eq!(in_flight.len(), 1);
        assert!(in_flight[0].finished);
    }

    #[test]
    fn a_session_on_another_controller_replays_what_the_first_did_not_acknowledge() {
        let outbox = Outbox::in_memory();
        let (to_a, mut on_a) = mpsc::unbounded_channel();
        assert!(outbox.attach(to_a, "https://a:7411").is_empty());
        outbox.push(event("j", 1));
        outbox.push(event("j", 2));
        outbox.acknowledge(ack("j", 1));
        assert_eq!(
            sequences(&[on_a.try_recv().expect("sent to a")]),
            vec![("j".into(), 1)]
        );
        // A dies; the job goes on and finishes while the link is down.
        outbox.detach();
        assert_eq!(outbox.connected_to(), None);
        assert_eq!(outbox.last_controller(), "https://a:7411");
        outbox.push(result("j", 3));
        let (to_b, _on_b) = mpsc::unbounded_channel();
        let replay = outbox.attach(to_b, "https://b:7411");
        assert_eq!(sequences(&replay), vec![("j".into(), 2), ("j".into(), 3)]);
        assert_eq!(outbox.connected_to().as_deref(), Some("https://b:7411"));
        assert_eq!(outbox.failovers(), 1);
        // Back on b after a restart of b is no failover.
        outbox.detach();
        let (again, _rx) = mpsc::unbounded_channel();
        outbox.attach(again, "https://b:7411");
        assert_eq!(outbox.failovers(), 1);
    }

    #[tokio::test]
    async fn a_restart_replays_the_unacknowledged_and_names_the_interrupted() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("agent.journal");
        {
            let (outbox, interrupted) = Outbox::open(&path).expect("test step");
            assert!(interrupted.is_empty());
            outbox
                .begin_job(&offer("done"))
                .expect("test step")
                .await
                .expect("test step");
            outbox.push(event("done", 1));
            outbox.push(result("done", 2));
            outbox.job_finished("done", 1);
            outbox
                .begin_job(&offer("cut"))
                .expect("test step")
                .await
                .expect("test step");
            outbox.push(event("cut", 1));
            outbox.push(event("cut", 2));
            settled(&outbox);
            outbox.acknowledge(ack("cut", 1));
            // Dropped here as if killed: nothing else is written.
        }
        let (outbox, interrupted) = Outbox::open(&path).expect("test step");
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].offer.job_id, "cut");
        assert_eq!(interrupted[0].last_seq, 2);
        let (tx, _rx) = mpsc::unbounded_channel();
        let replay = outbox.attach(tx, "https://a:7411");
        assert_eq!(
            sequences(&replay),
            vec![("done".into(), 1), ("done".into(), 2), ("cut".into(), 2)]
        );
        assert!(outbox.is_running("cut", 1));
        assert!(outbox.pending_result("done", 1).is_some());
    }

    #[tokio::test]
    async fn a_settled_journal_is_emptied() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("agent.journal");
        let (outbox, _) = Outbox::open(&path).expect("test step");
        outbox
            .begin_job(&offer("j"))
            .expect("test step")
            .await
            .expect("test step");
        outbox.push(result("j", 1));
        outbox.job_finished("j", 1);
        settled(&outbox);
        outbox.acknowledge(ack("j", 1));
        // The truncation is queued behind the ack; a started job waits on both.
        outbox
            .begin_job(&offer("k"))
            .expect("test step")
            .await
            .expect("test step");
        let records = journal::read(&path).expect("test step").records;
        assert_eq!(records, vec![Record::Started(offer("k"))]);
    }

    #[test]
    fn a_duplicate_offer_of_a_running_job_is_not_begun_twice() {
        let outbox = Outbox::in_memory();
        assert!(outbox.begin_job(&offer("j")).is_some());
        assert!(outbox.begin_job(&offer("j")).is_none());
    }
}
