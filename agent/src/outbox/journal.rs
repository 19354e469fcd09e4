//! The outbox's journal on disk (DESIGN §4.3): every job start, event and
//! result is appended and fsynced **before** it is sent, so an agent killed
//! at any instant restarts knowing which jobs it had begun and which results
//! the controller never acknowledged.
//!
//! Format: a sequence of frames `[len: u32 LE][check: 4 bytes][payload]`,
//! where `check` is the start of the payload's SHA-256 and the payload is a
//! one-byte tag and a prost message. A torn last frame (a crash mid-write) is
//! ignored; a damaged frame elsewhere stops the replay there and is reported.
//!
//! Writes go through one thread that batches whatever is queued into one
//! `write` and one `fdatasync` (group commit), then runs each write's
//! completion in order: a job never waits on another job's fsync twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;

use pgrollout_shared::proto::{Ack, AgentMessage, JobOffer};
use prost::Message;
use sha2::{Digest, Sha256};

const TAG_STARTED: u8 = 1;
const TAG_MESSAGE: u8 = 2;
const TAG_ACKED: u8 = 3;
/// A frame larger than this is damage, not data (messages are capped well below).
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// A record's frame: the payload's length and the first bytes of its
/// SHA-256, then the payload (the tag, then the encoded message), encoded
/// straight into the one buffer.
fn frame(tag: u8, message: &impl Message) -> Vec<u8> {
    let payload_len = 1 + message.encoded_len();
    let mut frame = Vec::with_capacity(8 + payload_len);
    frame.extend_from_slice(&(payload_len as u32).to_le_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.push(tag);
    // A Vec grows as needed: encoding into one cannot run out of room.
    let _ = message.encode(&mut frame);
    let checksum = Sha256::digest(&frame[8..]);
    frame[4..8].copy_from_slice(&checksum[..4]);
    frame
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A job accepted for execution: the offer, so a restart can resolve it.
    Started(JobOffer),
    /// An event or result, kept until acknowledged.
    Message(AgentMessage),
    /// The controller stored everything of (job, attempt) up to `seq`.
    Acked(Ack),
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        match self {
            Record::Started(offer) => frame(TAG_STARTED, offer),
            Record::Message(message) => frame(TAG_MESSAGE, message),
            Record::Acked(ack) => frame(TAG_ACKED, ack),
        }
    }

    fn decode(payload: &[u8]) -> Option<Record> {
        let (&tag, body) = payload.split_first()?;
        match tag {
            TAG_STARTED => JobOffer::decode(body).ok().map(Record::Started),
            TAG_MESSAGE => AgentMessage::decode(body).ok().map(Record::Message),
            TAG_ACKED => Ack::decode(body).ok().map(Record::Acked),
            _ => None,
        }
    }
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct Replayed {
    pub records: Vec<Record>,
    /// Where and why the replay stopped early, if it did.
    pub damage: Option<String>,
}

/// Reads every intact record of the journal at `path` (none if it does not exist).
pub fn read(path: &Path) -> std::io::Result<Replayed> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Replayed::default())
        }
        Err(error) => return Err(error),
    };
    let mut replayed = Replayed::default();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            break; // torn header: the crash came mid-write
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            replayed.damage = Some(format!("frame at byte {at} claims {len} bytes"));
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break; // torn payload
        };
        if Sha256::digest(payload)[..4] != header[4..8] {
            replayed.damage = Some(format!("checksum mismatch in the frame at byte {at}"));
            break;
        }
        match Record::decode(payload) {
            Some(record) => replayed.records.push(record),
            None => {
                replayed.damage = Some(format!("undecodable frame at byte {at}"));
                break;
            }
        }
        at += 8 + len;
    }
    Ok(replayed)
}

type Completion = Box<dyn FnOnce() + Send>;

enum Request {
    Append {
        frame: Vec<u8>,
        /// Whether the write must reach the disk before `done` runs.
        sync: bool,
        done: Option<Completion>,
    },
    /// Everything before this is settled: start an empty file.
    Truncate,
}

/// The appending side of the journal; cheap to share.
pub struct Journal {
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Journal {
    /// Opens `path` for appending after rewriting it to hold exactly
    /// `keep`, and locks it so no second agent process can share it.
    pub fn open(path: &Path, keep: &[Record]) -> std::io::Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.with_extension("lock"))?;
        lock.try_lock().map_err(|_| {
            std::io::Error::other(format!(
                "another pgrollout-agent is using the journal {}; each agent needs its own state_dir",
                path.display()
            ))
        })?;
        rewrite(path, keep)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let (requests, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer(file, receiver, lock))?;
        Ok(Journal {
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    /// Appends `record`; `done` runs once it is on disk (or, when `sync` is
    /// false, once written). Must be called in the order records are meant to
    /// appear: callers hold the outbox's lock.
    pub fn append(&self, record: &Record, sync: bool, done: Option<Completion>) {
        self.append_frame(record.encode(), sync, done);
    }

    /// [`Journal::append`] of `Record::Message(message)`, without a copy of
    /// the message to make the record (a job's result can be half a
    /// megabyte: a thousand routines' reports): `done` gets it back.
    pub fn append_message(
        &self,
        message: AgentMessage,
        sync: bool,
        done: impl FnOnce(AgentMessage) + Send + 'static,
    ) {
        let frame = frame(TAG_MESSAGE, &message);
        self.append_frame(frame, sync, Some(Box::new(move || done(message))));
    }

    /// [`Journal::append`] of `Record::Started(offer)`, without a copy of the
    /// offer (a batch's offer carries every routine's SQL).
    pub fn append_started(&self, offer: &JobOffer, done: Option<Completion>) {
        self.append_frame(frame(TAG_STARTED, offer), true, done);
    }

    fn append_frame(&self, frame: Vec<u8>, sync: bool, done: Option<Completion>) {
        let request = Request::Append { frame, sync, done };
        let Some(requests) = &self.requests else {
            return;
        };
        if let Err(mpsc::SendError(Request::Append {
            done: Some(done), ..
        })) = requests.send(request)
        {
            // The writer is gone only if it failed; it already logged why.
            // Running the completion keeps the agent working without a journal
            // rather than stalling every job.
            done();
        }
    }

    /// Starts the file afresh: nothing before this point is needed any more.
    pub fn truncate(&self) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request::Truncate);
        }
    }
}

impl Drop for Journal {
    /// Lets the writer finish what is queued and release the file's lock,
    /// so the journal can be opened again as soon as this one is gone.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            // The last reference may go inside a completion the writer runs.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

/// Writes `records` to a new file that replaces `path` atomically.
fn rewrite(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let temporary = path.with_extension("journal.tmp");
    {
        let mut file = File::create(&temporary)?;
        for record in records {
            file.write_all(&record.encode())?;
        }
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn writer(mut file: File, requests: mpsc::Receiver<Request>, _lock: File) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let mut frames = Vec::new();
        let mut sync = false;
        let mut completions = Vec::new();
        for request in batch {
            match request {
                Request::Append {
                    frame,
                    sync: wants_sync,
                    done,
                } => {
                    frames.extend_from_slice(&frame);
                    sync |= wants_sync;
                    completions.extend(done);
                }
                Request::Truncate => {
                    // Frames queued before the truncation are settled by it.
                    frames.clear();
                    if let Err(error) = file.set_len(0) {
                        tracing::error!(%error, "cannot truncate the agent journal");
                    }
                }
            }
        }
        let written =
            file.write_all(&frames)
                .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            // Without a journal the agent still works, but a restart would
            // forget unacknowledged results: say so loudly.
            tracing::error!(%error, "writing the agent journal failed; results may not survive a restart");
        }
        for done in completions {
            done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::{agent_message::Body, JobEvent};

    fn event(seq: u64) -> Record {
        Record::Message(AgentMessage {
            body: Some(Body::Event(JobEvent {
                job_id: "j".into(),
                seq,
                ..Default::default()
            })),
        })
    }

    fn append_and_wait(journal: &Journal, record: &Record) {
        let (tx, rx) = std::sync::mpsc::channel();
        journal.append(
            record,
            true,
            Some(Box::new(move || tx.send(()).expect("test step"))),
        );
        rx.recv().expect("test step");
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("agent.journal");
        {
            let journal = Journal::open(&path, &[]).expect("test step");
            append_and_wait(&journal, &event(1));
            append_and_wait(&journal, &event(2));
        }
        // A crash mid-append leaves half a frame.
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("test step");
        file.write_all(&event(3).encode()[..7]).expect("test step");
        let replayed = read(&path).expect("test step");
        assert_eq!(replayed.records, vec![event(1), event(2)]);
        assert_eq!(replayed.damage, None);
    }

    #[test]
    fn a_flipped_byte_is_reported_as_damage() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("agent.journal");
        let mut bytes = event(1).encode();
        bytes.extend(event(2).encode());
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("test step");
        let replayed = read(&path).expect("test step");
        assert_eq!(replayed.records, vec![event(1)]);
        assert!(replayed.damage.expect("test step").contains("checksum"));
    }

    #[test]
    fn a_second_agent_cannot_open_the_same_journal() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("agent.journal");
        let _first = Journal::open(&path, &[]).expect("test step");
        let error = Journal::open(&path, &[]).err().expect("refused");
        assert!(error.to_string().contains("another pgrollout-agent"));
    }

    #[test]
    fn truncation_settles_everything_before_it() {
        let dir = tempfile::tempdir().expect("test step");
        let path = dir.path().join("agent.journal");
        let journal = Journal::open(&path, &[event(1)]).expect("test step");
        journal.truncate();
        append_and_wait(&journal, &event(2));
        assert_eq!(read(&path).expect("test step").records, vec![event(2)]);
    }
}
