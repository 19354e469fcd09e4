//! The part of a rollback that runs inside its transaction, shared with the
//! automatic rollback: backup of the current state, each definition from its
//! first working source, owner/ACL/comment exactly, the ledger rows, and the
//! smoke test of the restored versions — everything up to, not including,
//! COMMIT, which the caller decides.

use pgrollout_shared::operations::RollbackSpec;
use pgrollout_shared::proto::{RestoredRoutine, SmokeReport, StepStatus};

use super::plan::Planned;
use super::progress::Progress;
use super::sources::{gather, Candidate, Definition};
use super::verify::smoke_in_transaction;
use crate::jobs::context::{JobContext, JobFailure};
use crate::jobs::steps::{self, database, refused, Stopped};
use crate::sql::recreate::{self, RecreateError};
use crate::sql::{self, exact_restore, LedgerJob, LedgerRow, RoutineSnapshot, TargetConnection};

/// What the transaction did, ready to commit.
pub struct Applied {
    pub chosen: Vec<Candidate>,
    pub outcomes: Vec<exact_restore::ExactOutcome>,
    pub restored: Vec<RestoredRoutine>,
    pub ledger_ids: Vec<i64>,
    pub smoke: Vec<SmokeReport>,
    pub written: crate::backup::WrittenBackup,
}

/// How a reversal is recorded and checked: an operator's rollback, an
/// emergency one, or the automatic one after a failed post-commit smoke test.
pub struct Reversal<'a> {
    /// The ledger's action.
    pub action: &'a str,
    /// The ledger's job id (unique per routine with the identity).
    pub job_id: String,
    /// Refuse to commit a state that differs from the recorded one. An
    /// emergency, or an automatic rollback, prefers the closest state to
    /// leaving the broken version live.
    pub strict: bool,
    /// Smoke-test the restored versions before COMMIT.
    pub smoke: bool,
}

/// Sources, then BEGIN and everything up to (not including) COMMIT. On
/// `Err` the caller drops the connection or rolls back.
pub async fn prepare_and_apply(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    spec: &RollbackSpec,
    planned: &[Planned<'_>],
    reversal: &Reversal<'_>,
    progress: &Progress,
    warnings: &mut Vec<String>,
) -> Result<Applied, Stopped> {
    progress.at("sources");
    let sources = gather(conn, planned, &spec.known_versions).await?;
    for warning in &sources.warnings {
        ctx.event("source", StepStatus::Skipped, warning, 0, Vec::new());
    }
    warnings.extend(sources.warnings.iter().cloned());
    let wanted: Vec<&RoutineSnapshot> = planned.iter().map(|p| p.wanted()).collect();
    let (acls, who) = steps::privileges_ahead(conn, &wanted).await?;

    crate::jobs::context::txn_seal::begin(conn).await?;
    progress.at("backup");
    let identities: Vec<String> = planned.iter().map(|p| p.identity.to_owned()).collect();
    let (current, written) = steps::backup(ctx, conn, &reversal.job_id, &identities).await?;
    for (routine, now) in planned.iter().zip(&current) {
        if let Some(drift) = drift(routine, now, &written.path) {
            ctx.event("drift", StepStatus::Skipped, &drift, 0, Vec::new());
            warnings.push(drift);
        }
    }
    progress.at("restore");
    let mut fallbacks = Vec::new();
    let chosen = ctx
        .step(
            "restore",
            restore_definitions(conn, planned, &sources.candidates, &current, &mut fallbacks),
            |chosen| {
                let sources: std::collections::BTreeSet<&str> =
                    chosen.iter().map(|c| c.source.as_str()).collect();
                match sources.iter().next() {
                    // One source for all (a batch's backup): said once.
                    Some(source) if sources.len() == 1 && planned.len() > 1 => {
                        format!("{} routine(s) from {source}", planned.len())
                    }
                    _ => {
                        let used: Vec<String> = planned
                            .iter()
                            .zip(chosen.iter())
                            .map(|(p, c)| format!("{} from {}", p.identity, c.source))
                            .collect();
                        pgrollout_shared::text::abridged(&used, 3, "; ")
                    }
                }
            },
        )
        .await?;
    for warning in &fallbacks {
        ctx.event("source", StepStatus::Skipped, warning, 0, Vec::new());
    }
    warnings.extend(fallbacks);
    let targets: Vec<exact_restore::ExactTarget<'_>> = planned
        .iter()
        .zip(&chosen)
        .zip(&acls)
        .map(|((p, c), acl)| exact_restore::ExactTarget {
            lookup: p.identity,
            wanted: &c.state,
            acl,
        })
        .collect();
    progress.at("exact-state");
    let outcomes = ctx
        .step(
            "exact-state",
            async {
                exact_restore::set_metadata(&conn.client, &who, &targets)
                    .await
                    .map_err(|e| {
                        JobFailure::deploy(format!(
                            "restoring owner, ACL and comment failed: {}",
                            e.describe()
                        ))
                        .with_sql_state(e.sql_state())
                    })
            },
            |outcomes| {
                let inexact = outcomes
                    .iter()
                    .filter(|o| !o.differences.is_empty())
                    .count();
                match inexact {
                    0 => format!(
                        "{} routine(s): definition, owner, ACL and comment as recorded, byte for byte",
                        outcomes.len()
                    ),
                    n => format!("{n} routine(s) differ from the recorded state"),
                }
            },
        )
        .await?;
    for outcome in &outcomes {
        for note in &outcome.notes {
            ctx.event("exact-state", StepStatus::Skipped, note, 0, Vec::new());
            warnings.push(note.clone());
        }
    }
    let differences: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.differences.clone())
        .collect();
    if !differences.is_empty() {
        if reversal.strict {
            return Err(Stopped::from(JobFailure::deploy(format!(
                "the restore does not match the recorded state ({}); the transaction was rolled back, nothing \
                 changed",
                differences.join("; ")
            ))));
        }
        warnings.extend(differences);
    }
    progress.at("ledger");
    let (restored, ledger_ids) = ctx
        .step(
            "ledger",
            record(
                ctx, conn, spec, reversal, planned, &chosen, &current, &outcomes, &written,
            ),
            |(_, ids)| format!("{} ledger row(s) written", ids.len()),
        )
        .await?;
    progress.at("smoke");
    let smoke = if !reversal.smoke {
        if spec.emergency.is_some() {
            ctx.event(
                "smoke",
                StepStatus::Skipped,
                "emergency: smoke test skipped",
                0,
                Vec::new(),
            );
        }
        Vec::new()
    } else {
        smoke_in_transaction(ctx, conn, planned, &chosen, &outcomes).await?
    };
    Ok(Applied {
        chosen,
        outcomes,
        restored,
        ledger_ids,
        smoke,
        written,
    })
}

/// Puts each routine's definition in place from its first working source.
/// A plan's CREATE runs in a savepoint and is undone if its definition is
/// not the recorded one.
async fn restore_definitions(
    conn: &TargetConnection,
    planned: &[Planned<'_>],
    candidates: &[Vec<Candidate>],
    current: &[RoutineSnapshot],
    warnings: &mut Vec<String>,
) -> Result<Vec<Candidate>, JobFailure> {
    let mut chosen = Vec::with_capacity(planned.len());
    for ((routine, candidates), now) in planned.iter().zip(candidates).zip(current) {
        let mut used = None;
        for candidate in candidates {
            match apply(conn, routine, candidate, now).await {
                Ok(()) => {
                    used = Some(candidate.clone());
                    break;
                }
                Err(Fallback::Next(problem)) => warnings.push(format!(
                    "{}: {} did not reproduce the recorded version ({problem}); falling back to the next source",
                    routine.identity, candidate.source
                )),
                Err(Fallback::Stop(failure)) => return Err(failure),
            }
        }
        chosen.push(used.ok_or_else(|| {
            JobFailure::deploy(format!(
                "no source could restore {}: the backup, the controller's plans and the ledger all failed (see the \
                 warnings); nothing was changed",
                routine.identity
            ))
        })?);
    }
    Ok(chosen)
}

enum Fallback {
    Next(String),
    Stop(JobFailure),
}

async fn apply(
    conn: &TargetConnection,
    routine: &Planned<'_>,
    candidate: &Candidate,
    now: &RoutineSnapshot,
) -> Result<(), Fallback> {
    let failed = |what: &str, e: tokio_postgres::Error| {
        Fallback::Stop(JobFailure::database(
            format!("{what} {} failed", routine.identity),
            e,
        ))
    };
    match &candidate.definition {
        Definition::Absent => match &now.identity {
            Some(identity) => exact_restore::drop_routine(&conn.client, identity)
                .await
                .map_err(|e| failed("dropping", e)),
            None => Ok(()),
        },
        Definition::Exact(definition) if now.definition.as_ref() == Some(definition) => Ok(()),
        Definition::Exact(definition) => {
            recreate::create_or_recreate(&conn.client, definition, &[], now.identity.as_deref())
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    RecreateError::Database(e) => failed("restoring", e),
                    RecreateError::Dependants(found) => Fallback::Stop(refused(format!(
                        "cannot restore {}: {found}",
                        routine.identity
                    ))),
                })
        }
        Definition::Create {
            sql,
            search_path,
            expected_sha256,
        } => {
            let savepoint = |s: &'static str| async move {
                conn.client
                    .batch_execute(s)
                    .await
                    .map_err(|e| failed("a savepoint around", e))
            };
            savepoint("SAVEPOINT pgrollout_source").await?;
            let created = recreate::create_or_recreate(
                &conn.client,
                sql,
                search_path,
                now.identity.as_deref(),
            )
            .await;
            let outcome = match created {
                Ok(_) => {
                    match exact_restore::live_definition_sha256(&conn.client, routine.identity)
                        .await
                    {
                        Ok(Some(sha)) if sha == *expected_sha256 => Ok(()),
                        Ok(Some(sha)) => Err(format!("its definition has SHA-256 {sha}")),
                        Ok(None) => Err("it created another routine".to_owned()),
                        Err(e) => Err(sql::describe_error(&e, None)),
                    }
                }
                Err(RecreateError::Database(e)) => Err(sql::describe_error(&e, Some(sql))),
                Err(RecreateError::Dependants(found)) => Err(found.to_string()),
            };
            match outcome {
                Ok(()) => savepoint("RELEASE SAVEPOINT pgrollout_source").await,
                Err(problem) => {
                    savepoint("ROLLBACK TO SAVEPOINT pgrollout_source; RELEASE SAVEPOINT pgrollout_source").await?;
                    Err(Fallback::Next(problem))
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    ctx: &JobContext,
    conn: &TargetConnection,
    spec: &RollbackSpec,
    reversal: &Reversal<'_>,
    planned: &[Planned<'_>],
    chosen: &[Candidate],
    current: &[RoutineSnapshot],
    outcomes: &[exact_restore::ExactOutcome],
    written: &crate::backup::WrittenBackup,
) -> Result<(Vec<RestoredRoutine>, Vec<i64>), JobFailure> {
    let ledger_error = |e: tokio_postgres::Error| database("ledger write failed", e);
    sql::ensure_reversal_columns(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(ledger_error)?;
    let changes: Vec<&str> = current
        .iter()
        .zip(outcomes)
        .map(|(before, outcome)| change_of(before, &outcome.after))
        .collect();
    let notes: Vec<String> = chosen
        .iter()
        .map(|c| match &spec.emergency {
            Some(reason) => format!("emergency: {reason}; source: {}", c.source),
            None => format!("source: {}", c.source),
        })
        .collect();
    let mut rows = Vec::new();
    let mut restored = Vec::new();
    for (index, routine) in planned.iter().enumerate() {
        // A rollback to a named version that is already live changes
        // nothing and pops nothing: it leaves no row.
        if routine.undoes().is_none() && changes[index] == "unchanged" {
            restored.push(restored_routine(
                routine,
                &chosen[index],
                &outcomes[index].after,
                "unchanged",
            ));
            continue;
        }
        rows.push(LedgerRow {
            identity: routine.identity,
            change: changes[index],
            plan_id: &chosen[index].plan_id,
            commit_sha: chosen[index].commit_sha.as_deref(),
            previous: &current[index],
            new: &outcomes[index].after,
            undoes_ledger_id: routine.undoes().map(|r| r.id),
            new_identity: None,
            note: Some(&notes[index]),
            source_sha256: None,
            backed_up: true,
        });
        restored.push(restored_routine(
            routine,
            &chosen[index],
            &outcomes[index].after,
            changes[index],
        ));
    }
    if rows.is_empty() {
        return Ok((restored, Vec::new()));
    }
    let backup_path = written.path.display().to_string();
    let job = LedgerJob {
        job_id: &reversal.job_id,
        attempt: i32::try_from(ctx.job.attempt).unwrap_or(i32::MAX),
        rollout_id: &ctx.job.rollout_id,
        action: reversal.action,
        actor: &ctx.job.actor,
        trace_id: &ctx.job.trace.trace_id,
        backup_path: &backup_path,
        backup_sha256: &written.sha256,
        audit_head: ctx.job.audit_head.as_ref(),
    };
    let ids = sql::insert_ledger_rows(&conn.client, &ctx.target.ledger_schema, &job, &rows)
        .await
        .map_err(ledger_error)?;
    for entry in &mut restored {
        if let Some((id, _)) = ids.iter().find(|(_, identity)| *identity == entry.identity) {
            entry.detail = format!("ledger #{id}{}", entry.detail);
        }
    }
    Ok((restored, ids.into_iter().map(|(id, _)| id).collect()))
}

fn restored_routine(
    routine: &Planned<'_>,
    chosen: &Candidate,
    after: &RoutineSnapshot,
    change: &str,
) -> RestoredRoutine {
    let undone = routine.undoes();
    RestoredRoutine {
        identity: routine.identity.to_owned(),
        change: change.to_owned(),
        source: chosen.source.clone(),
        sha256: after.definition_sha256().unwrap_or_default(),
        undoes_ledger_id: undone.map_or(0, |r| r.id),
        undoes_rollout_id: undone.map(|r| r.rollout_id.clone()).unwrap_or_default(),
        detail: match undone {
            Some(row) => format!(
                "; undoes ledger #{} ({} of rollout {})",
                row.id, row.action, row.rollout_id
            ),
            None => String::new(),
        },
    }
}

/// restored | dropped | unchanged, comparing before and after.
pub fn change_of(before: &RoutineSnapshot, after: &RoutineSnapshot) -> &'static str {
    match (before.existed, after.existed) {
        (true, false) => "dropped",
        (false, false) => "unchanged",
        _ if before.definition == after.definition
            && before.owner == after.owner
            && before.acl == after.acl
            && before.comment == after.comment =>
        {
            "unchanged"
        }
        _ => "restored",
    }
}

/// How the live routine departs from what the ledger says its latest change
/// left, if it does: someone changed it outside pgrollout. The rollback
/// restores the recorded version regardless; the operator should know, and
/// where the hand-made version went: the backup of the current state, written
/// and verified before this is said (issue 20).
fn drift(routine: &Planned<'_>, now: &RoutineSnapshot, backup: &std::path::Path) -> Option<String> {
    let recorded = &routine.live?.new;
    let mut what = Vec::new();
    if recorded.definition_sha256() != now.definition_sha256() {
        what.push("definition");
    }
    if recorded.definition.is_some() && now.existed {
        if recorded.owner != now.owner {
            what.push("owner");
        }
        if recorded.acl != now.acl {
            what.push("ACL");
        }
        if recorded.comment != now.comment {
            what.push("comment");
        }
    }
    (!what.is_empty()).then(|| {
        format!(
            "{}: {} changed outside pgrollout since ledger #{}; restoring the recorded version regardless \
             (the hand-made version is kept in backup {})",
            routine.identity,
            what.join(", "),
            routine.live.map_or(0, |r| r.id),
            backup.display()
        )
    })
}
