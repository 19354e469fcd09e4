//! `--continue-on-error` batches: every routine in its own transaction, in
//! dependency order. A routine that fails is rolled back alone and reported;
//! the routines that depend on it are skipped with the reason; the rest are
//! deployed. One backup file covers the whole batch, written before anything
//! changes.

use std::time::Instant;

use pgrollout_shared::job::BatchOptions;
use pgrollout_shared::proto::{
    AppliedRoutine, JobResult, Outcome, RoutineOutcome, SmokeReport, StepStatus,
};
use pgrollout_shared::routine::Routine;

use super::failed::Failed;
use super::finish::verify_after_commit;
use crate::jobs::context::{Finished, JobContext, JobFailure};
use crate::jobs::steps::{apply, replace, smoke_step};
use crate::sql::{self, TargetConnection};

pub async fn run(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    batch: &BatchOptions,
) -> Result<Finished, Failed> {
    let before = ctx
        .step(
            "backup",
            apply::take_backup(ctx, conn, routines),
            |before| before.describe(),
        )
        .await?;
    // Created once up front, so each routine's transaction only inserts.
    sql::ensure_ledger(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(|e| JobFailure::database("cannot create the ledger", e))?;

    let total = routines.len();
    let mut outcomes: Vec<RoutineOutcome> = routines
        .iter()
        .map(|r| RoutineOutcome {
            identity: r.identity.to_string(),
            status: "not-run".into(),
            ..Default::default()
        })
        .collect();
    let mut blocked = vec![false; total];
    let mut worst = Outcome::Succeeded;
    let (mut applied, mut ledger_ids, mut smoke) = (Vec::new(), Vec::new(), Vec::new());
    ctx.event("apply", StepStatus::Started, "", 0, Vec::new());
    let step_started = Instant::now();
    let units = tied_units(routines);
    for (index, unit) in units.iter().enumerate() {
        let started = Instant::now();
        // A routine tied to later ones by a companion statement goes with
        // the last of them, in one transaction.
        if unit.last() != Some(&index) {
            ctx.progress("apply", index + 1, total);
            continue;
        }
        let blocker = unit.iter().find_map(|&member| {
            batch
                .dependencies
                .iter()
                .find(|(dependent, dependency)| *dependent == member && blocked[*dependency])
                .map(|(_, dependency)| *dependency)
        });
        if let Some(first) = blocker {
            let why = format!(
                "depends on {}, which {}",
                routines[first].identity,
                if outcomes[first].status == "failed" {
                    "failed"
                } else {
                    "was skipped"
                }
            );
            for &member in unit {
                blocked[member] = true;
                outcomes[member].status = "skipped".into();
                outcomes[member].error = why.clone();
            }
        } else {
            let members: Vec<Routine> = unit.iter().map(|&m| routines[m].clone()).collect();
            let before_unit = apply::Before {
                previous: unit.iter().map(|&m| before.previous[m].clone()).collect(),
                untouched: unit.iter().map(|&m| before.untouched[m]).collect(),
                recreated: vec![false; unit.len()],
                written: before.written.clone(),
            };
            match deploy_one(ctx, conn, &members, &before_unit).await {
                Ok((mut done, ids, reports)) => {
                    for (&member, applied) in unit.iter().zip(&done) {
                        outcomes[member].status = if applied.change == "unchanged" {
                            "unchanged"
                        } else {
                            "deployed"
                        }
                        .into();
                    }
                    applied.append(&mut done);
                    ledger_ids.extend(ids);
                    smoke.extend(reports);
                }
                Err((mut failure, reports)) => {
                    // Never "rolled back" unless it is the sealed transaction.
                    if let Some(why) = conn.escaped() {
                        failure = failure.followed_by(&format!(
                            "; {}",
                            crate::jobs::context::txn_seal::escaped_message(
                                "a smoke test call",
                                &why
                            )
                        ));
                    }
                    let _ = conn.client.batch_execute("ROLLBACK").await;
                    for &member in unit {
                        blocked[member] = true;
                        outcomes[member].status = "failed".into();
                        outcomes[member].error = failure.message();
                    }
                    smoke.extend(reports);
                    worst = worse(worst, failure.outcome);
                }
            }
        }
        for &member in unit {
            outcomes[member].duration_ms = apply::elapsed_ms(started);
            outcomes[member].duration_us =
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        }
        ctx.progress("apply", index + 1, total);
    }
    let count = |status: &str| outcomes.iter().filter(|o| o.status == status).count();
    let summary = format!(
        "{} deployed, {} unchanged, {} failed, {} skipped of {total}",
        count("deployed"),
        count("unchanged"),
        count("failed"),
        count("skipped")
    );
    let status = if worst == Outcome::Succeeded {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    ctx.event(
        "apply",
        status,
        &summary,
        apply::elapsed_ms(step_started),
        Vec::new(),
    );

    let deployed: Vec<Routine> = routines
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.status == "deployed" || o.status == "unchanged")
        .map(|(r, _)| r.clone())
        .collect();
    let (backup_path, backup_sha256) = before.backup_fields();
    let result = JobResult {
        outcome: worst as i32,
        message: summary,
        backup_path,
        backup_sha256,
        ledger_ids,
        applied,
        routines: outcomes,
        smoke,
        ..Default::default()
    };
    // Every transaction is settled: what follows verifies and, if needed,
    // restores, and must not be cut off by the fence.
    ctx.fence_lifted();
    match &before.written {
        Some(written) => Ok(verify_after_commit(ctx, conn, &deployed, written, result).await),
        // Every routine unchanged: nothing to verify after COMMIT.
        None => Ok(result.into()),
    }
}

/// One routine — or the routines a companion statement ties together
/// ([`tied_units`]) — in its own transaction. On `Err` the caller rolls
/// back. Unchanged routines are left untouched and get only their ledger
/// rows (one statement, atomic alone when nothing else changed).
async fn deploy_one(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routine: &[Routine],
    before: &apply::Before,
) -> Result<(Vec<AppliedRoutine>, Vec<i64>, Vec<SmokeReport>), (JobFailure, Vec<SmokeReport>)> {
    let plain = |failure: JobFailure| (failure, Vec::new());
    if before.untouched.iter().all(|u| *u) {
        let (applied, ids) = apply::record(ctx, conn, routine, &[], before)
            .await
            .map_err(plain)?;
        return Ok((applied, ids, Vec::new()));
    }
    crate::jobs::context::txn_seal::begin(conn)
        .await
        .map_err(plain)?;
    let changed = before.changed(routine);
    let positions: Vec<usize> = (0..routine.len())
        .filter(|&i| !before.untouched[i])
        .collect();
    let previous: Vec<&crate::sql::RoutineSnapshot> =
        positions.iter().map(|&i| &before.previous[i]).collect();
    let recreated = replace::create_changed(ctx, conn, &changed, &previous)
        .await
        .map_err(|(_, failure)| plain(failure))?;
    let mut before = before.clone();
    for index in recreated {
        before.recreated[positions[index]] = true;
    }
    let before = &before;
    let created = apply::verify_created(conn, routine).await.map_err(plain)?;
    let changed_created: Vec<apply::Created> =
        positions.iter().map(|&i| created[i].clone()).collect();
    apply::grant(conn, &changed, &changed_created)
        .await
        .map_err(plain)?;
    let oids = apply::oids(&created);
    let (applied, ids) = apply::record(ctx, conn, routine, &oids, before)
        .await
        .map_err(plain)?;
    let reports = smoke_step(ctx, conn, routine, &oids, "smoke", "in-transaction")
        .await
        .map_err(plain)?;
    if !reports.iter().all(|r| r.passed) {
        let failure = JobFailure::new(
            Outcome::SmokeFailed,
            format!("smoke test failed: {}", apply::smoke_summary(&reports)),
        );
        return Err((failure, reports));
    }
    ctx.commit(conn, false)
        .await
        .map_err(|failure| (failure, reports.clone()))?;
    Ok((applied, ids, reports))
}

/// The worse of two outcomes: the one with the higher exit code.
fn worse(a: Outcome, b: Outcome) -> Outcome {
    let code = |o: Outcome| pgrollout_shared::exit_code::ExitCode::from_outcome(o).code();
    if code(b) > code(a) {
        b
    } else {
        a
    }
}

/// For each routine, the routines deployed with it in one transaction, in
/// batch order: itself alone, unless a companion statement of its file
/// names others of the batch too (`GRANT … ON FUNCTION a(int), b(text)`
/// travels with both): such a statement can only run once all exist, and
/// the ledger records the state it leaves for each, so they go together, at
/// the place of the last of them. A routine placed between them that needs
/// an earlier one fails as PostgreSQL decides, and says so.
fn tied_units(routines: &[Routine]) -> Vec<Vec<usize>> {
    let mut root: Vec<usize> = (0..routines.len()).collect();
    fn find(root: &mut [usize], mut at: usize) -> usize {
        while root[at] != at {
            root[at] = root[root[at]];
            at = root[at];
        }
        at
    }
    let mut first_with: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for (index, routine) in routines.iter().enumerate() {
        for statement in &routine.companion_sql {
            let key = (routine.source_path.as_str(), statement.as_str());
            let other = *first_with.entry(key).or_insert(index);
            let (a, b) = (find(&mut root, other), find(&mut root, index));
            root[a.max(b)] = a.min(b);
        }
    }
    let mut members: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for index in 0..routines.len() {
        let unit = find(&mut root, index);
        members.entry(unit).or_default().push(index);
    }
    (0..routines.len())
        .map(|index| members[&find(&mut root, index)].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routine(source_path: &str, companions: &[&str]) -> Routine {
        Routine {
            source_path: source_path.to_owned(),
            companion_sql: companions.iter().map(|s| s.to_string()).collect(),
            ..crate::jobs::steps::test_routine::routine("f", &[])
        }
    }

    #[test]
    fn a_statement_shared_by_routines_of_one_file_ties_them() {
        let grant = "GRANT EXECUTE ON FUNCTION a(int), c(int) TO r";
        let routines = [
            routine("procedures/x.sql", &[grant]),
            routine("procedures/b.sql", &["COMMENT ON FUNCTION b() IS 'b'"]),
            routine("procedures/x.sql", &[grant, "ALTER FUNCTION c(int) COST 5"]),
            // The same text in another file ties nothing.
            routine("procedures/y.sql", &[grant]),
            routine("procedures/z.sql", &[]),
        ];
        assert_eq!(
            tied_units(&routines),
            vec![vec![0, 2], vec![1], vec![0, 2], vec![3], vec![4]]
        );
    }
}
