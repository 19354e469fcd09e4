//! A signed request runs once per target (issue 19): statements bind a
//! request id, so without this a controller could replay a completed, signed
//! job unchanged — for instance redeploy an approved plan after it was
//! rolled back. Before a signed job runs, its (target, request id) is
//! reserved here, durably (appended and fsynced in the agent's state dir);
//! another job naming the same request on the same target is refused. A job
//! that changed nothing (no ledger row, not a success) releases its
//! reservation, so a failed attempt can be retried with the same approvals.
//!
//! Only the same job and attempt passes again: a redelivery of a job the
//! agent already ran, which the ledger's idempotency key answers with the
//! recorded result ("already applied; nothing changed").
//!
//! The file is a log of lines `reserve|release <target> <request> <job>
//! <attempt>` (tab-separated, fields free of tabs and newlines); it is small
//! (one line per signed change) and read whole for each check.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file, beside the agent's journal (`agent/src/jobs/mod.rs` checks
/// and reserves; the bench times it).
pub fn path_for(journal: &Path) -> PathBuf {
    journal.with_file_name("pgrollout-agent.signed-requests")
}

/// One check-and-reserve at a time, so two offers of one request at once
/// cannot both pass.
static LOCK: Mutex<()> = Mutex::new(());

/// Which job holds each (target, request).
type Holders = HashMap<(String, String), (String, u32)>;

fn read(path: &Path) -> Result<Holders, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        // Fails closed: an unreadable record refuses every signed job.
        Err(error) => {
            return Err(format!(
                "the record of signed requests already run ({}) is unreadable: {error}",
                path.display()
            ))
        }
    };
    let mut holders = Holders::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        // A torn last line (a crash mid-write) is ignored.
        let [verb, target, request, job, attempt] = fields[..] else {
            continue;
        };
        let Ok(attempt) = attempt.parse::<u32>() else {
            continue;
        };
        let key = (target.to_owned(), request.to_owned());
        match verb {
            "reserve" => {
                holders.insert(key, (job.to_owned(), attempt));
            }
            "release" if holders.get(&key) == Some(&(job.to_owned(), attempt)) => {
                holders.remove(&key);
            }
            _ => {}
        }
    }
    Ok(holders)
}

fn append(path: &Path, line: &str) -> Result<(), String> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()
    };
    write().map_err(|error| {
        format!(
            "cannot record the signed request in {}: {error}",
            path.display()
        )
    })
}

fn line(verb: &str, fields: [&str; 4]) -> Result<String, String> {
    if fields
        .iter()
        .any(|f| f.is_empty() || f.contains(['\t', '\n', '\r']))
    {
        return Err(
            "a signed job needs a request id, a job id and a target without tabs or newlines"
                .into(),
        );
    }
    Ok(format!("{verb}\t{}\n", fields.join("\t")))
}

/// Reserves (target, request) for this job, or says which job ran it.
pub fn reserve(
    path: &Path,
    target: &str,
    request: &str,
    job: &str,
    attempt: u32,
) -> Result<(), String> {
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let holders = read(path)?;
    match holders.get(&(target.to_owned(), request.to_owned())) {
        Some((holder, held)) if holder == job && *held == attempt => Ok(()),
        Some((holder, held)) => Err(format!(
            "request {request} was already run on target {target} (job {holder}, attempt {held}): a signed \
             request runs once per target — a replay is refused; ask for the change again and have it approved"
        )),
        None => append(
            path,
            &line("reserve", [target, request, job, &attempt.to_string()])?,
        ),
    }
}

/// Another job that reserved (target, request) here before and released it
/// (it changed nothing: failed and rolled back). A fleet's
/// deploy that failed on a target runs there again only with the operator's
/// signed `resume` (`signing::fleet`), which this tells the agent to ask for.
pub fn ran_before(
    path: &Path,
    target: &str,
    request: &str,
    job: &str,
) -> Result<Option<String>, String> {
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(format!(
                "the record of signed requests already run ({}) is unreadable: {error}",
                path.display()
            ))
        }
    };
    // The last other job that reserved it, if it gave it back since (one
    // still holding it is a replay, which `reserve` refuses and names).
    let mut last: Option<(String, bool)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["reserve", t, r, holder, _] if t == target && r == request => {
                last = Some((holder.to_owned(), true));
            }
            ["release", t, r, holder, _] if t == target && r == request => {
                if let Some((held_by, held)) = &mut last {
                    if held_by == holder {
                        *held = false;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(last.and_then(|(holder, held)| (!held && holder != job).then_some(holder)))
}

/// Releases the reservation of a job that changed nothing.
pub fn release(path: &Path, target: &str, request: &str, job: &str, attempt: u32) {
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let released = line("release", [target, request, job, &attempt.to_string()])
        .and_then(|line| append(path, &line));
    if let Err(error) = released {
        tracing::warn!(job_id = job, "{error}; the request stays consumed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_runs_once_per_target_unless_released() {
        let path = std::env::temp_dir().join(format!(
            "pgrollout-signed-requests-test-{}-{}",
            std::process::id(),
            crate::job::now_unix_ms()
        ));
        assert!(reserve(&path, "main", "p-1", "job-a", 1).is_ok());
        // The same job again (a redelivery) passes; another job does not.
        assert!(reserve(&path, "main", "p-1", "job-a", 1).is_ok());
        let replay = reserve(&path, "main", "p-1", "job-b", 1)
            .err()
            .unwrap_or_default();
        assert!(
            replay.contains("already run on target main (job job-a"),
            "{replay}"
        );
        assert!(reserve(&path, "main", "p-1", "job-a", 2).is_err());
        // Another target is another reservation (the statements bind it).
        assert!(reserve(&path, "second", "p-1", "job-c", 1).is_ok());
        // Released (nothing changed): a retry runs.
        release(&path, "main", "p-1", "job-a", 1);
        assert!(reserve(&path, "main", "p-1", "job-a", 2).is_ok());
        assert!(reserve(&path, "main", "p-1", "job-b", 1).is_err());
        assert!(reserve(&path, "main", "p\t2", "job-b", 1).is_err());
        // Who ran a request before, released or not (a fleet's resume asks).
        // (job-a released p-1 on main, then took it again: held, not "before".)
        assert_eq!(ran_before(&path, "main", "p-1", "job-z"), Ok(None));
        release(&path, "main", "p-1", "job-a", 2);
        assert_eq!(
            ran_before(&path, "main", "p-1", "job-z"),
            Ok(Some("job-a".into()))
        );
        assert_eq!(ran_before(&path, "main", "p-1", "job-a"), Ok(None));
        assert_eq!(ran_before(&path, "third", "p-1", "job-z"), Ok(None));
        let _ = std::fs::remove_file(&path);
    }
}
