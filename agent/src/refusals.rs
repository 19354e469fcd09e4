//! Refusals reach the real controller's audit log (issue 19): a job the
//! `[approvals]` policy refuses is a result sent to the controller that
//! offered it — which, if that controller is hostile, may drop it. So each
//! refusal is also appended here, fsynced, in the agent's state dir, and
//! every record is reported to each controller the agent connects to after
//! its Welcome. A hostile controller cannot make the agent forget one; the
//! real controller records each (agent, job, attempt) once and audits it as
//! `agent.refused_job`.
//!
//! Format: length-delimited `RefusedJob` messages. A torn last record (a
//! crash mid-write) ends the read. The file holds at most `MAX_KEPT`
//! records: past it, the oldest are dropped when the next is written.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pgrollout_shared::proto::RefusedJob;
use prost::Message;

/// Enough for any attack worth auditing; bounded so the file stays small.
const MAX_KEPT: usize = 10_000;

static LOCK: Mutex<()> = Mutex::new(());

/// The file, beside the agent's journal.
pub fn path_for(journal: &Path) -> PathBuf {
    journal.with_file_name("pgrollout-agent.refusals")
}

/// Every refusal kept, oldest first.
pub fn read(path: &Path) -> Vec<RefusedJob> {
    read_checked(path).0
}

/// The records, and whether the file ends cleanly after the last one.
fn read_checked(path: &Path) -> (Vec<RefusedJob>, bool) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(path = %path.display(), "cannot read the refusals kept for the controller: {error}");
            }
            return (Vec::new(), true);
        }
    };
    let mut rest = bytes.as_slice();
    let mut records = Vec::new();
    while !rest.is_empty() {
        match RefusedJob::decode_length_delimited(&mut rest) {
            Ok(record) => records.push(record),
            Err(_) => return (records, false),
        }
    }
    (records, true)
}

/// Keeps the refusal of `job` for every controller the agent connects to
/// next: the one that offered it (`controller`) may drop its result.
pub fn keep_for_job(
    config: &crate::config::AgentConfig,
    job: &pgrollout_shared::job::Job,
    controller: String,
    reason: &str,
) {
    keep(
        &path_for(&config.journal_path()),
        &RefusedJob {
            job_id: job.id.clone(),
            attempt: job.attempt,
            kind: job.kind.name().to_owned(),
            target: job.target.clone(),
            rollout_id: job.rollout_id.clone(),
            plan_id: job.plan_id.clone(),
            request_id: job.approvals.request_id.clone(),
            actor: job.actor.clone(),
            reason: reason.to_owned(),
            refused_unix_ms: pgrollout_shared::job::now_unix_ms(),
            controller,
        },
    );
}

/// Keeps `refusal` durably; a failure is logged (the refusal still is the
/// job's result, sent to the controller that offered it).
pub fn keep(path: &Path, refusal: &RefusedJob) {
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let written = (|| -> std::io::Result<()> {
        let (mut kept, clean) = read_checked(path);
        // Rewritten whole past the bound, or after a torn tail (appending
        // after it would hide the new record).
        if kept.len() >= MAX_KEPT || !clean {
            let excess = (kept.len() + 1).saturating_sub(MAX_KEPT);
            kept.drain(..excess);
            kept.push(refusal.clone());
            let mut bytes = Vec::new();
            for record in &kept {
                record
                    .encode_length_delimited(&mut bytes)
                    .map_err(std::io::Error::other)?;
            }
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, &bytes)?;
            OpenOptions::new()
                .write(true)
                .open(&temporary)?
                .sync_all()?;
            return std::fs::rename(&temporary, path);
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(&refusal.encode_length_delimited_to_vec())?;
        file.sync_data()
    })();
    if let Err(error) = written {
        tracing::error!(job_id = %refusal.job_id, path = %path.display(), "cannot keep the refusal for the next controller: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_kept_in_order_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("refusals");
        assert!(read(&path).is_empty());
        for id in ["j-1", "j-2"] {
            keep(
                &path,
                &RefusedJob {
                    job_id: id.into(),
                    reason: "forged".into(),
                    ..Default::default()
                },
            );
        }
        let mut bytes = std::fs::read(&path).expect("kept");
        bytes.extend_from_slice(&[40, 1, 2]);
        std::fs::write(&path, bytes).expect("torn");
        let ids: Vec<String> = read(&path).into_iter().map(|r| r.job_id).collect();
        assert_eq!(ids, ["j-1", "j-2"]);
        // The next one is kept after the two, the torn bytes dropped.
        keep(
            &path,
            &RefusedJob {
                job_id: "j-3".into(),
                ..Default::default()
            },
        );
        let ids: Vec<String> = read(&path).into_iter().map(|r| r.job_id).collect();
        assert_eq!(ids, ["j-1", "j-2", "j-3"]);
    }
}
