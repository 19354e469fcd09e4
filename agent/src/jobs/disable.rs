//! `pgrollout disable` and `pgrollout enable` (SEED.md "Disable Procedure
//! (< 30 seconds)"). Disable renames every routine of the name to
//! `<name>_disabled_<yyyymmdd>` or, with `--revoke`, revokes EXECUTE from
//! every grantee — PUBLIC and the owner included, so no ordinary caller can
//! run it (superusers always can). Each is one transaction with a backup and
//! ledger rows holding the exact previous state; enable undoes the latest
//! disable of each routine exactly from those rows.

use std::time::SystemTime;

use pgrollout_shared::operations::{DisableSpec, RoutineSelector};
use pgrollout_shared::proto::{JobResult, Outcome, RestoredRoutine};
use pgrollout_shared::routine::MAX_IDENTIFIER_BYTES;
use tokio_postgres::types::Type;

use super::reversal::versions::{by_identity, version_state};
use super::steps::{self, database, refused, Stopped};
use crate::backup::WrittenBackup;
use crate::jobs::context::{Finished, JobContext, JobFailure};
use crate::sql::{
    self, exact_restore, quote_identifier, LedgerJob, LedgerRecord, LedgerRow, RoutineSnapshot,
    TargetConnection,
};

pub async fn run(ctx: &JobContext, spec: &DisableSpec) -> Finished {
    disable(ctx, spec)
        .await
        .map_or_else(Stopped::into_result, Finished::from)
}

pub async fn enable(ctx: &JobContext, selector: &RoutineSelector) -> Finished {
    enable_routines(ctx, selector)
        .await
        .map_or_else(Stopped::into_result, Finished::from)
}

/// One change of a disable or enable, ready for the ledger.
struct Change {
    identity: String,
    change: &'static str,
    plan_id: String,
    commit_sha: Option<String>,
    previous: RoutineSnapshot,
    new: RoutineSnapshot,
    undoes: Option<i64>,
    new_identity: Option<String>,
    note: String,
}

async fn disable(ctx: &JobContext, spec: &DisableSpec) -> Result<JobResult, Stopped> {
    let conn = steps::connect(ctx).await?;
    steps::lock(ctx, &conn).await?;
    if let Some(replayed) = steps::already_done(ctx, &conn).await? {
        return Ok(replayed.into_result());
    }
    let schema = &ctx.target.ledger_schema;
    let (routines, ledger) = ctx
        .step(
            "resolve",
            async {
                let routines = sql::routines_named(&conn.client, &spec.routines, schema)
                    .await
                    .map_err(|e| database("cannot look the routines up", e))?;
                let ledger = sql::rows_for_selector(&conn.client, schema, &spec.routines)
                    .await
                    .map_err(|e| database("cannot read the ledger", e))?;
                Ok((routines, ledger))
            },
            |(routines, _)| {
                let names: Vec<&str> = routines.iter().map(|r| r.identity.as_str()).collect();
                format!("{} routine(s): {}", routines.len(), names.join(", "))
            },
        )
        .await?;
    let groups = by_identity(&ledger);
    let state_of = |identity: &str| {
        groups
            .iter()
            .find(|(i, _)| *i == identity)
            .map(|(_, rows)| version_state(rows))
    };
    let mut skipped = Vec::new();
    let routines: Vec<_> = routines
        .into_iter()
        .filter(|r| match state_of(&r.identity).and_then(|s| s.disabled) {
            Some(row) => {
                skipped.push(format!(
                    "{} is already disabled (ledger #{})",
                    r.identity, row.id
                ));
                false
            }
            None => true,
        })
        .collect();
    if routines.is_empty() {
        let why = if skipped.is_empty() {
            format!(
                "no routine named {} in target {}",
                ctx.job.label, ctx.target.name
            )
        } else {
            skipped.join("; ")
        };
        return Err(refused(format!("nothing to disable: {why}")).into());
    }
    let stamp = utc_date_stamp();
    steps::simple(&conn, "BEGIN").await?;
    let work = async {
        let identities: Vec<String> = routines.iter().map(|r| r.identity.clone()).collect();
        let (before, written) = steps::backup(ctx, &conn, &ctx.job.id, &identities).await?;
        let mut script = String::new();
        let mut notes = Vec::new();
        for routine in &routines {
            if spec.revoke {
                let grantees = grantees(&conn, &routine.identity).await?;
                script.push_str(&format!(
                    "REVOKE EXECUTE ON ROUTINE {} FROM {} CASCADE;\n",
                    routine.identity,
                    grantees.join(", ")
                ));
                notes.push(format!("EXECUTE revoked from {}", grantees.join(", ")));
            } else {
                let new_name = disabled_name(&routine.name, &stamp);
                script.push_str(&format!(
                    "ALTER ROUTINE {} RENAME TO {};\n",
                    routine.identity,
                    quote_identifier(&new_name)
                ));
                notes.push(format!("renamed to {new_name}"));
            }
        }
        ctx.step(
            if spec.revoke { "revoke" } else { "rename" },
            async {
                conn.client
                    .batch_execute(&script)
                    .await
                    .map_err(|e| database("disabling failed, nothing was changed", e))
            },
            |_| notes.join("; "),
        )
        .await?;
        let oids: Vec<u32> = routines.iter().map(|r| r.oid).collect();
        let now = sql::identities_of(&conn.client, &oids)
            .await
            .map_err(|e| database("cannot read the disabled routines", e))?;
        let lookups: Vec<String> = now
            .iter()
            .zip(&identities)
            .map(|(now, before)| now.clone().unwrap_or_else(|| before.clone()))
            .collect();
        let after = sql::snapshot_routines(&conn.client, &lookups)
            .await
            .map_err(|e| database("cannot read the disabled routines", e))?;
        let changes: Vec<Change> = routines
            .iter()
            .zip(before)
            .zip(after)
            .zip(notes)
            .map(|(((routine, previous), new), note)| {
                let (plan_id, commit_sha) = version_origin(state_of(&routine.identity));
                let renamed = new.identity.clone().filter(|i| *i != routine.identity);
                Change {
                    identity: routine.identity.clone(),
                    change: if spec.revoke { "revoked" } else { "renamed" },
                    plan_id,
                    commit_sha,
                    previous,
                    new,
                    undoes: None,
                    new_identity: renamed,
                    note,
                }
            })
            .collect();
        let ids = ctx
            .step(
                "ledger",
                record(ctx, &conn, "disable", &changes, &written),
                |ids| format!("{} ledger row(s) written", ids.len()),
            )
            .await?;
        Ok::<_, Stopped>((changes, ids, written))
    }
    .await;
    finish(ctx, &conn, work, skipped).await
}

async fn enable_routines(
    ctx: &JobContext,
    selector: &RoutineSelector,
) -> Result<JobResult, Stopped> {
    let conn = steps::connect(ctx).await?;
    steps::lock(ctx, &conn).await?;
    if let Some(replayed) = steps::already_done(ctx, &conn).await? {
        return Ok(replayed.into_result());
    }
    let schema = &ctx.target.ledger_schema;
    let ledger = sql::rows_for_selector(&conn.client, schema, selector)
        .await
        .map_err(|e| database("cannot read the ledger", e))?;
    let groups = by_identity(&ledger);
    let disabled: Vec<(&LedgerRecord, (String, Option<String>))> = groups
        .iter()
        .filter_map(|(_, rows)| {
            let state = version_state(rows);
            Some((state.disabled?, version_origin(Some(state))))
        })
        .collect();
    ctx.step(
        "resolve",
        async {
            if disabled.is_empty() {
                return Err(refused(format!(
                    "nothing to enable: the ledger of target {} records no disable of {} in force",
                    ctx.target.name, ctx.job.label
                )));
            }
            Ok(())
        },
        |_| {
            let rows: Vec<String> = disabled
                .iter()
                .map(|(row, _)| format!("{} ({}, ledger #{})", row.identity, row.change, row.id))
                .collect();
            rows.join(", ")
        },
    )
    .await?;
    let wanted: Vec<&RoutineSnapshot> = disabled.iter().map(|(row, _)| &row.previous).collect();
    let (acls, who) = steps::privileges_ahead(&conn, &wanted).await?;
    steps::simple(&conn, "BEGIN").await?;
    let work = async {
        // Where each routine is now: renamed, or still under its name.
        let current: Vec<String> = disabled
            .iter()
            .map(|(row, _)| row.new_identity.clone().unwrap_or_else(|| row.identity.clone()))
            .collect();
        let (before, written) = steps::backup(ctx, &conn, &ctx.job.id, &current).await?;
        let mut script = String::new();
        for ((row, _), now) in disabled.iter().zip(&before) {
            if row.new_identity.is_none() {
                continue;
            }
            let identity = now.identity.as_deref().ok_or_else(|| {
                JobFailure::deploy(format!(
                    "{} was renamed to {} by ledger #{}, which no longer exists; restore it with `pgrollout \
                     rollback --to <ledger-id>`",
                    row.identity,
                    row.new_identity.as_deref().unwrap_or("?"),
                    row.id
                ))
            })?;
            let name = sql::name_of_identity(&conn.client, &row.identity)
                .await
                .map_err(|e| database("cannot read the routine's name", e))?;
            script.push_str(&format!(
                "ALTER ROUTINE {identity} RENAME TO {};\n",
                quote_identifier(&name)
            ));
        }
        if !script.is_empty() {
            ctx.step(
                "rename",
                async {
                    conn.client
                        .batch_execute(&script)
                        .await
                        .map_err(|e| database("renaming back failed, nothing was changed", e))
                },
                |_| "renamed back".into(),
            )
            .await?;
        }
        // A definition changed while disabled is put back too.
        let live = sql::snapshot_routines(
            &conn.client,
            &disabled.iter().map(|(row, _)| row.identity.clone()).collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| database("cannot read the routines", e))?;
        for ((row, _), live) in disabled.iter().zip(&live) {
            if let Some(definition) = &row.previous.definition {
                if live.definition.as_ref() != Some(definition) {
                    exact_restore::create_routine(&conn.client, definition, &[])
                        .await
                        .map_err(|e| database("restoring the definition failed", e))?;
                }
            }
        }
        let targets: Vec<exact_restore::ExactTarget<'_>> = disabled
            .iter()
            .zip(&acls)
            .map(|((row, _), acl)| exact_restore::ExactTarget {
                lookup: &row.identity,
                wanted: &row.previous,
                acl,
            })
            .collect();
        let outcomes = ctx
            .step(
                "exact-state",
                async {
                    exact_restore::set_metadata(&conn.client, &who, &targets)
                        .await
                        .map_err(|e| {
                            JobFailure::deploy(format!("restoring the privileges failed: {}", e.describe()))
                                .with_sql_state(e.sql_state())
                        })
                },
                |_| "definition, owner, ACL and comment as before the disable".into(),
            )
            .await?;
        let differences: Vec<String> = outcomes.iter().flat_map(|o| o.differences.clone()).collect();
        if !differences.is_empty() {
            return Err(JobFailure::deploy(format!(
                "enabling would not restore the recorded state ({}); nothing was changed",
                differences.join("; ")
            ))
            .into());
        }
        let changes: Vec<Change> = disabled
            .iter()
            .zip(before)
            .zip(outcomes)
            .map(|(((row, (plan_id, commit_sha)), previous), outcome)| Change {
                identity: row.identity.clone(),
                change: if row.new_identity.is_some() { "renamed-back" } else { "re-granted" },
                plan_id: plan_id.clone(),
                commit_sha: commit_sha.clone(),
                previous,
                new: outcome.after,
                undoes: Some(row.id),
                new_identity: None,
                note: format!("undoes the disable of ledger #{}", row.id),
            })
            .collect();
        let ids = ctx
            .step(
                "ledger",
                record(ctx, &conn, "enable", &changes, &written),
                |ids| format!("{} ledger row(s) written", ids.len()),
            )
            .await?;
        Ok::<_, Stopped>((changes, ids, written))
    }
    .await;
    finish(ctx, &conn, work, Vec::new()).await
}

type Done = (Vec<Change>, Vec<i64>, WrittenBackup);

/// COMMIT (or ROLLBACK on failure) and the result.
async fn finish(
    ctx: &JobContext,
    conn: &TargetConnection,
    work: Result<Done, Stopped>,
    skipped: Vec<String>,
) -> Result<JobResult, Stopped> {
    let (changes, ids, written) = match work {
        Ok(done) => done,
        Err(stopped) => {
            let _ = conn.client.batch_execute("ROLLBACK").await;
            return Err(stopped);
        }
    };
    ctx.step("commit", ctx.commit(conn, true), |_| "committed".into())
        .await?;
    let restored: Vec<RestoredRoutine> = changes
        .iter()
        .zip(&ids)
        .map(|(change, id)| RestoredRoutine {
            identity: change.identity.clone(),
            change: change.change.to_owned(),
            source: format!("ledger #{id}"),
            sha256: change.new.definition_sha256().unwrap_or_default(),
            undoes_ledger_id: change.undoes.unwrap_or_default(),
            undoes_rollout_id: String::new(),
            detail: change.note.clone(),
        })
        .collect();
    let verb = match changes.first().map(|c| c.change) {
        Some("renamed" | "revoked") => "disabled",
        _ => "enabled",
    };
    Ok(JobResult {
        outcome: Outcome::Succeeded as i32,
        message: format!("{verb} {} routine(s)", restored.len()),
        backup_path: written.path.display().to_string(),
        backup_sha256: written.sha256,
        ledger_ids: ids,
        restored,
        warnings: skipped,
        ..Default::default()
    })
}

async fn record(
    ctx: &JobContext,
    conn: &TargetConnection,
    action: &str,
    changes: &[Change],
    written: &WrittenBackup,
) -> Result<Vec<i64>, JobFailure> {
    let ledger_error = |e: tokio_postgres::Error| database("ledger write failed", e);
    sql::ensure_reversal_columns(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(ledger_error)?;
    let rows: Vec<LedgerRow<'_>> = changes
        .iter()
        .map(|c| LedgerRow {
            identity: &c.identity,
            change: c.change,
            plan_id: &c.plan_id,
            commit_sha: c.commit_sha.as_deref(),
            previous: &c.previous,
            new: &c.new,
            undoes_ledger_id: c.undoes,
            new_identity: c.new_identity.as_deref(),
            note: Some(&c.note),
            source_sha256: None,
            backed_up: true,
        })
        .collect();
    let backup_path = written.path.display().to_string();
    let job = LedgerJob {
        job_id: &ctx.job.id,
        attempt: i32::try_from(ctx.job.attempt).unwrap_or(i32::MAX),
        rollout_id: &ctx.job.rollout_id,
        action,
        actor: &ctx.job.actor,
        trace_id: &ctx.job.trace.trace_id,
        backup_path: &backup_path,
        backup_sha256: &written.sha256,
        audit_head: ctx.job.audit_head.as_ref(),
    };
    let ids = sql::insert_ledger_rows(&conn.client, &ctx.target.ledger_schema, &job, &rows)
        .await
        .map_err(ledger_error)?;
    // In the order of `changes`, matched by identity (unique per job).
    Ok(changes
        .iter()
        .filter_map(|c| {
            ids.iter()
                .find(|(_, i)| *i == c.identity)
                .map(|(id, _)| *id)
        })
        .collect())
}

/// Every grantee of the routine's ACL now (the owner's default grants
/// included), plus PUBLIC, quoted for a REVOKE.
async fn grantees(conn: &TargetConnection, identity: &str) -> Result<Vec<String>, JobFailure> {
    let rows = conn
        .client
        .query_typed(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END \
             FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a \
             WHERE p.oid = to_regprocedure($1)",
            &[(&identity, Type::TEXT)],
        )
        .await
        .map_err(|e| database("cannot read the routine's privileges", e))?;
    let mut grantees = vec!["PUBLIC".to_owned()];
    grantees.extend(
        rows.iter()
            .filter_map(|row| row.get::<_, Option<String>>(0))
            .map(|role| quote_identifier(&role)),
    );
    Ok(grantees)
}

/// The plan and commit of the version in force, for the ledger row.
fn version_origin(
    state: Option<super::reversal::versions::VersionState<'_>>,
) -> (String, Option<String>) {
    state
        .and_then(|s| s.latest())
        .map(|row| (row.plan_id.clone(), row.commit_sha.clone()))
        .unwrap_or_default()
}

/// `<name>_disabled_<yyyymmdd>`, with the name shortened (at a character
/// boundary) so the whole stays within PostgreSQL's 63-byte identifiers
/// instead of being truncated by the server.
pub fn disabled_name(name: &str, stamp: &str) -> String {
    let suffix = format!("_disabled_{stamp}");
    let room = MAX_IDENTIFIER_BYTES.saturating_sub(suffix.len());
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &name[..end])
}

/// Today's date in UTC as `yyyymmdd`.
fn utc_date_stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .take(8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_names_fit_in_an_identifier() {
        assert_eq!(
            disabled_name("reconcilemupstream", "20251113"),
            "reconcilemupstream_disabled_20251113"
        );
        let long = "é".repeat(40);
        let name = disabled_name(&long, "20251113");
        assert!(name.len() <= MAX_IDENTIFIER_BYTES, "{}", name.len());
        assert!(name.ends_with("_disabled_20251113"));
    }
}
