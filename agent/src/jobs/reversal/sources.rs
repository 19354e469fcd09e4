//! Where a rolled-back version comes from, in SEED.md's order: the zone's
//! local backup (its SHA-256 verified first), then the version the controller
//! holds from an earlier plan, then the ledger in the target database. A
//! source that is missing, corrupt or holds another version is reported and
//! the next one is tried.
//!
//! The backup and the ledger carry the whole state (definition, owner, ACL,
//! comment) and are verified here, before the transaction. The controller's
//! plan carries the CREATE statement only: it is applied inside the
//! transaction and kept only if the definition it produces has the recorded
//! SHA-256; owner, ACL and comment then come from the ledger row.

use std::collections::HashMap;
use std::path::PathBuf;

use pgrollout_shared::operations::KnownVersion;
use tokio_postgres::types::Type;

use super::plan::Planned;
use crate::backup::{self, VerifiedBackup};
use crate::jobs::context::JobFailure;
use crate::jobs::steps::database;
use crate::sql::{sha256_hex, RoutineSnapshot, TargetConnection};
use pgrollout_shared::errors::error_chain;

/// How a candidate puts the definition in place.
#[derive(Clone, Debug)]
pub enum Definition {
    /// The routine must not exist.
    Absent,
    /// A verified `pg_get_functiondef` text, replayed as is.
    Exact(String),
    /// A plan's CREATE statement, kept only if it yields this SHA-256.
    Create {
        sql: String,
        /// Its routine's declared path, which the statement was written for.
        search_path: Vec<String>,
        expected_sha256: String,
    },
}

/// One way to restore one routine.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// For the operator: "backup /…sql", "controller plan 3f2a… (commit …)", "ledger #12".
    pub source: String,
    pub definition: Definition,
    /// Owner, ACL and comment (and the definition, except for `Create`).
    pub state: RoutineSnapshot,
    /// Plan and commit of the version, when known.
    pub plan_id: String,
    pub commit_sha: Option<String>,
    /// The controller's plan version, for its smoke tests.
    pub known: Option<KnownVersion>,
}

/// Every routine's candidates in order, and what was wrong with the sources
/// that were skipped.
pub struct Sources {
    pub candidates: Vec<Vec<Candidate>>,
    pub warnings: Vec<String>,
}

/// Reads and verifies the sources of every planned routine.
pub async fn gather(
    conn: &TargetConnection,
    planned: &[Planned<'_>],
    known: &[KnownVersion],
) -> Result<Sources, JobFailure> {
    let backups = read_backups(planned).await;
    let requested: Vec<String> = backups
        .values()
        .filter_map(|b| b.as_ref().ok())
        .flat_map(|b| b.routines.iter())
        .filter(|r| r.identity.is_none())
        .map(|r| r.requested.clone())
        .collect();
    let resolved = resolve(conn, &requested).await?;
    let known_by_sha: HashMap<&str, &KnownVersion> = known
        .iter()
        .map(|k| (k.definition_sha256.as_str(), k))
        .collect();
    let mut sources = Sources {
        candidates: Vec::with_capacity(planned.len()),
        warnings: Vec::new(),
    };
    for routine in planned {
        let mut candidates = Vec::new();
        let (origin_plan, origin_commit) = routine.wanted_origin();
        let known = routine
            .wanted_sha256()
            .and_then(|sha| known_by_sha.get(sha).copied());
        match from_backup(routine, &backups, &resolved) {
            Ok(Some(state)) => candidates.push(Candidate {
                source: format!(
                    "backup {}",
                    routine
                        .backup_row()
                        .and_then(|r| r.backup_path.as_deref())
                        .unwrap_or("?")
                ),
                definition: exact_or_absent(&state),
                state,
                plan_id: origin_plan.clone(),
                commit_sha: origin_commit.clone(),
                known: known.cloned(),
            }),
            Ok(None) => {}
            Err(problem) => sources.warnings.push(format!(
                "{}: {problem}; falling back to the next source",
                routine.identity
            )),
        }
        if let (Some(known), Some(sha)) = (known, routine.wanted_sha256()) {
            candidates.push(Candidate {
                source: format!(
                    "controller plan {} (commit {})",
                    short(&known.plan_id),
                    if known.commit_sha.is_empty() {
                        "unknown"
                    } else {
                        &known.commit_sha
                    }
                ),
                definition: Definition::Create {
                    sql: known.routine.create_sql.clone(),
                    search_path: known.routine.search_path.clone(),
                    expected_sha256: sha.to_owned(),
                },
                state: routine.wanted().clone(),
                plan_id: known.plan_id.clone(),
                commit_sha: Some(known.commit_sha.clone()).filter(|c| !c.is_empty()),
                known: Some(known.clone()),
            });
        }
        let wanted = routine.wanted();
        let ledger_row = routine.ledger_row();
        if wanted.definition.as_deref().map(sha256_hex).as_deref() == routine.wanted_sha256() {
            candidates.push(Candidate {
                source: format!("ledger #{}", ledger_row.id),
                definition: exact_or_absent(wanted),
                state: wanted.clone(),
                plan_id: origin_plan,
                commit_sha: origin_commit,
                known: known.cloned(),
            });
        } else {
            sources.warnings.push(format!(
                "{}: the definition in ledger #{} does not match its recorded SHA-256; not used",
                routine.identity, ledger_row.id
            ));
        }
        sources.candidates.push(candidates);
    }
    Ok(sources)
}

fn exact_or_absent(state: &RoutineSnapshot) -> Definition {
    match &state.definition {
        Some(definition) => Definition::Exact(definition.clone()),
        None => Definition::Absent,
    }
}

type Backups = HashMap<PathBuf, Result<VerifiedBackup, String>>;

/// Reads each backup file the plan needs once, off the async workers.
async fn read_backups(planned: &[Planned<'_>]) -> Backups {
    let mut paths: Vec<PathBuf> = planned
        .iter()
        .filter_map(|p| p.backup_row()?.backup_path.as_deref().map(PathBuf::from))
        .collect();
    paths.sort();
    paths.dedup();
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|path| {
                let read = backup::read_and_verify(&path).map_err(|e| error_chain(&e));
                (path, read)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// The `regprocedure` text of each signature a backup recorded for a
/// routine that did not exist yet (and so has no identity in the file).
async fn resolve(
    conn: &TargetConnection,
    requested: &[String],
) -> Result<HashMap<String, String>, JobFailure> {
    if requested.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = conn
        .client
        .query_typed(
            "SELECT s, to_regprocedure(s)::text FROM unnest($1::text[]) AS s",
            &[(&requested, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| database("cannot resolve backup entries", e))?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get(0), row.get::<_, Option<String>>(1)?)))
        .collect())
}

/// The wanted state from the backup, or why the backup cannot give it.
/// `Ok(None)`: no backup is recorded for this version.
fn from_backup(
    routine: &Planned<'_>,
    backups: &Backups,
    resolved: &HashMap<String, String>,
) -> Result<Option<RoutineSnapshot>, String> {
    let Some(row) = routine.backup_row() else {
        return Ok(None);
    };
    let Some(path) = row.backup_path.as_deref() else {
        return Err(format!("ledger #{} records no backup", row.id));
    };
    let verified = match backups.get(&PathBuf::from(path)) {
        Some(Ok(verified)) => verified,
        Some(Err(problem)) => return Err(format!("backup unusable: {problem}")),
        None => return Err(format!("backup {path} was not read")),
    };
    if row.backup_sha256.as_deref() != Some(verified.sha256.as_str()) {
        return Err(format!(
            "backup {path} is corrupt: its SHA-256 is {} but ledger #{} recorded {}",
            verified.sha256,
            row.id,
            row.backup_sha256.as_deref().unwrap_or("nothing")
        ));
    }
    let entry = verified
        .routines
        .iter()
        .find(|entry| {
            let identity = entry
                .identity
                .as_deref()
                .or_else(|| resolved.get(&entry.requested).map(String::as_str));
            identity == Some(routine.identity)
        })
        .ok_or_else(|| format!("backup {path} holds no entry for it"))?;
    if entry.definition_sha256().as_deref() != routine.wanted_sha256() {
        return Err(format!(
            "backup {path} holds another version of it than the ledger recorded"
        ));
    }
    // Both were written from one snapshot, so they agree unless one was
    // tampered with; every source then restores the same owner, ACL and
    // comment (which were checked against the catalog before BEGIN).
    let wanted = routine.wanted();
    if (&entry.owner, &entry.acl, &entry.comment) != (&wanted.owner, &wanted.acl, &wanted.comment)
        && entry.definition.is_some()
    {
        return Err(format!(
            "backup {path} records another owner, ACL or comment than the ledger"
        ));
    }
    Ok(Some(RoutineSnapshot {
        requested: routine.identity.to_owned(),
        ..entry.clone()
    }))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
