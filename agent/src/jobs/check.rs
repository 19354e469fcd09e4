//! The syntax gate's dry run (`check` job): on the zone's database, apply
//! every routine of the plan with the deploy's own primitives, inside a
//! transaction that is always rolled back, then let plpgsql_check read the
//! PL/pgSQL routines when that extension is installed in the target.
//!
//! Nothing commits, so there is no backup and no ledger row. Each routine's
//! CREATE and grants run in a savepoint, so one failure does not hide the
//! findings of the others. Every finding names the routine, its file and
//! line: an error fails the check (exit 1); warnings are reported only.

use std::time::Instant;

use pgrollout_shared::proto::{CheckFinding, JobResult, Outcome, StepStatus};
use pgrollout_shared::routine::{set_local_search_path_sql, Routine};
use tokio_postgres::error::SqlState;

use super::context::{failed_result, Finished, JobContext, JobFailure};
use super::steps::{self, apply, simple};
use crate::sql::static_checks::{self, PlpgsqlFinding};
use crate::sql::{describe_error, line_of_char_position, TargetConnection};
use pgrollout_shared::errors::error_chain;

pub async fn run(ctx: &JobContext, routines: &[Routine]) -> Finished {
    check(ctx, routines)
        .await
        .map_or_else(|failure| failed_result(failure, Vec::new()), Finished::from)
}

async fn check(ctx: &JobContext, routines: &[Routine]) -> Result<JobResult, JobFailure> {
    // A routine the plan retires has no statement to try: the deploy itself
    // refuses a DROP that would break dependants, before anything changes.
    let creating: Vec<Routine> = routines
        .iter()
        .filter(|r| r.retire.is_none())
        .cloned()
        .collect();
    let routines = creating.as_slice();
    let conn = steps::connect(ctx).await?;
    // A dry run takes the same locks as a deploy: never interleave with one.
    steps::lock(ctx, &conn).await?;
    crate::jobs::context::txn_seal::begin(&conn).await?;
    let checked = async {
        ctx.event("dry-run-apply", StepStatus::Started, "", 0, Vec::new());
        let started = Instant::now();
        let (mut findings, created) = apply_each(&conn, routines).await?;
        let applied = created.iter().filter(|c| c.is_some()).count();
        finished_step(
            ctx,
            "dry-run-apply",
            started,
            &findings,
            format!(
                "{applied} of {} routine(s) applied and rolled back",
                routines.len()
            ),
        );
        let (plpgsql, warning) = plpgsql_check_step(ctx, &conn, routines, &created).await?;
        findings.extend(plpgsql);
        Ok::<_, JobFailure>((findings, warning))
    }
    .await;
    let sealed = crate::jobs::context::txn_seal::confirm(&conn).await;
    // Always: a dry run never leaves anything behind.
    let _ = conn.client.batch_execute("ROLLBACK").await;
    sealed.map_err(|why| {
        JobFailure::deploy(crate::jobs::context::txn_seal::escaped_message(
            "the dry run's SQL",
            &why,
        ))
    })?;
    let (findings, warning) = checked?;
    let errors = findings.iter().filter(|f| f.level == "error").count();
    let message = if errors == 0 {
        format!(
            "dry run passed: {} routine(s) applied and rolled back, {} warning(s)",
            routines.len(),
            findings.len()
        )
    } else {
        let first: Vec<String> = findings
            .iter()
            .filter(|f| f.level == "error")
            .take(5)
            .map(pgrollout_shared::test_reports::finding_line)
            .collect();
        format!(
            "dry run found {errors} error(s), nothing was changed: {}",
            first.join("; ")
        )
    };
    Ok(JobResult {
        outcome: if errors == 0 {
            Outcome::Succeeded
        } else {
            Outcome::ValidationFailed
        } as i32,
        message,
        findings,
        warnings: warning.into_iter().collect(),
        ..Default::default()
    })
}

/// Applies the routines as a deploy would (one CREATE each, then the
/// grants): the usual case, where all is well, costs no more than the
/// deploy's apply. When something fails, everything is undone and each
/// routine is tried again in a savepoint of its own, so every failure is
/// found, not just the first. Returns the findings, and for each routine its
/// `regprocedure` text when it was created (`None` when it failed).
async fn apply_each(
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<(Vec<CheckFinding>, Vec<Option<String>>), JobFailure> {
    simple(conn, "SAVEPOINT pgrollout_check_all").await?;
    let all_at_once = async {
        for routine in routines {
            apply::create_in_its_path(conn, routine).await.ok()?;
        }
        let identities = apply::verify_created(conn, routines).await.ok()?;
        apply::grant(conn, routines, &identities).await.ok()?;
        Some(identities)
    }
    .await;
    if let Some(identities) = all_at_once {
        simple(conn, "RELEASE SAVEPOINT pgrollout_check_all").await?;
        return Ok((
            Vec::new(),
            identities.into_iter().map(|c| Some(c.identity)).collect(),
        ));
    }
    simple(
        conn,
        "ROLLBACK TO SAVEPOINT pgrollout_check_all; RELEASE SAVEPOINT pgrollout_check_all",
    )
    .await?;
    let mut findings = Vec::new();
    let mut created = Vec::with_capacity(routines.len());
    for routine in routines {
        simple(conn, "SAVEPOINT pgrollout_check").await?;
        let applied = async {
            apply::create_in_its_path(conn, routine)
                .await
                .map_err(|e| apply_finding(routine, &e, "apply"))?;
            // The finding's SQLSTATE is the failure's own (a GRANT to a
            // missing role: 42704), typed, not read from its text.
            let failed = |failure: JobFailure, source: &str| {
                let code = failure.sql_state().map(SqlState::code).unwrap_or_default();
                finding(routine, "error", code, &failure.message(), source)
            };
            let identity = apply::verify_created(conn, std::slice::from_ref(routine))
                .await
                .map_err(|failure| failed(failure, "apply"))?;
            apply::grant(conn, std::slice::from_ref(routine), &identity)
                .await
                .map_err(|failure| failed(failure, "grants"))?;
            Ok::<_, CheckFinding>(identity.into_iter().next().map(|c| c.identity))
        }
        .await;
        match applied {
            Ok(identity) => {
                simple(conn, "RELEASE SAVEPOINT pgrollout_check").await?;
                created.push(identity);
            }
            Err(problem) => {
                simple(
                    conn,
                    "ROLLBACK TO SAVEPOINT pgrollout_check; RELEASE SAVEPOINT pgrollout_check",
                )
                .await?;
                findings.push(problem);
                created.push(None);
            }
        }
    }
    Ok((findings, created))
}

/// plpgsql_check over every PL/pgSQL routine that was created, or a warning
/// saying why it did not run.
async fn plpgsql_check_step(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    created: &[Option<String>],
) -> Result<(Vec<CheckFinding>, Option<String>), JobFailure> {
    let schema = static_checks::extension_schema(&conn.client, "plpgsql_check")
        .await
        .map_err(|e| JobFailure::database("cannot read pg_extension", e))?;
    let Some(schema) = schema else {
        let why = format!(
            "plpgsql_check is not installed in target {}, so PL/pgSQL bodies were not checked beyond \
             CREATE (run CREATE EXTENSION plpgsql_check there; Debian package postgresql-15-plpgsql-check)",
            ctx.target.name
        );
        ctx.event("plpgsql_check", StepStatus::Skipped, &why, 0, Vec::new());
        return Ok((Vec::new(), Some(why)));
    };
    ctx.event("plpgsql_check", StepStatus::Started, "", 0, Vec::new());
    let started = Instant::now();
    let mut findings = Vec::new();
    let mut read = 0;
    for (routine, identity) in routines.iter().zip(created) {
        let Some(identity) = identity else { continue };
        if let Some(found) = check_one(conn, &schema, routine, identity).await? {
            read += 1;
            findings.extend(found);
        }
    }
    finished_step(
        ctx,
        "plpgsql_check",
        started,
        &findings,
        format!("{read} PL/pgSQL routine(s) read"),
    );
    Ok((findings, None))
}

/// Reports a step that looked for problems: failed when one is an error.
fn finished_step(
    ctx: &JobContext,
    step: &str,
    started: Instant,
    findings: &[CheckFinding],
    what: String,
) {
    let errors = findings.iter().filter(|f| f.level == "error").count();
    let status = if errors == 0 {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    ctx.event(
        step,
        status,
        format!(
            "{what}; {errors} error(s), {} warning(s)",
            findings.len() - errors
        ),
        crate::jobs::context::millis(started.elapsed()),
        Vec::new(),
    );
}

/// plpgsql_check's findings for one routine, lines mapped to its file;
/// `None` when it is not PL/pgSQL. A routine plpgsql_check cannot read (a
/// trigger function needs its table) is a warning, not an error.
async fn check_one(
    conn: &TargetConnection,
    schema: &str,
    routine: &Routine,
    identity: &str,
) -> Result<Option<Vec<CheckFinding>>, JobFailure> {
    let catalog_error =
        |e: tokio_postgres::Error| JobFailure::database("cannot read the catalog", e);
    let Some(body) = static_checks::routine_body(&conn.client, identity)
        .await
        .map_err(catalog_error)?
    else {
        return Ok(None);
    };
    if body.language != "plpgsql" {
        return Ok(None);
    }
    // With the routine's search path, as its calls resolve when it runs; the
    // savepoint's end undoes it.
    let open = format!(
        "SAVEPOINT pgrollout_plpgsql_check; {}",
        set_local_search_path_sql(&routine.search_path)
    );
    simple(conn, &open).await?;
    let checked = static_checks::plpgsql_check(&conn.client, schema, body.oid).await;
    let restore =
        "ROLLBACK TO SAVEPOINT pgrollout_plpgsql_check; RELEASE SAVEPOINT pgrollout_plpgsql_check";
    simple(conn, restore).await?;
    let rows = match checked {
        Ok(rows) => rows,
        Err(error) => {
            return Ok(Some(vec![finding(
                routine,
                "warning",
                "",
                &format!(
                    "plpgsql_check could not check it: {}",
                    describe_error(&error, None)
                ),
                "plpgsql_check",
            )]))
        }
    };
    // plpgsql_check counts lines from the start of the body; find where the
    // body starts in the statement (exact for dollar-quoted bodies).
    let body_line = routine
        .create_sql
        .find(&body.source)
        .map(|offset| routine.create_sql[..offset].matches('\n').count() as u32 + 1);
    Ok(Some(
        rows.into_iter()
            .map(|row| plpgsql_finding(routine, row, body_line))
            .collect(),
    ))
}

fn plpgsql_finding(routine: &Routine, row: PlpgsqlFinding, body_line: Option<u32>) -> CheckFinding {
    let statement_line = match (body_line, row.lineno) {
        (Some(start), Some(line)) if line > 0 => start + line as u32 - 1,
        _ => 0,
    };
    let detail: Vec<String> = [
        row.statement.map(|s| format!("statement {s}")),
        row.detail.map(|d| format!("detail: {d}")),
        row.hint.map(|h| format!("hint: {h}")),
        (body_line.is_none())
            .then_some(row.lineno)
            .flatten()
            .map(|l| format!("line {l} of the body")),
    ]
    .into_iter()
    .flatten()
    .collect();
    CheckFinding {
        line: file_line(routine, statement_line),
        statement_line,
        level: row.level,
        sqlstate: row.sqlstate.unwrap_or_default(),
        detail: detail.join("; "),
        ..finding(routine, "", "", &row.message, "plpgsql_check")
    }
}

/// A failed CREATE as a finding, at the line PostgreSQL points to.
fn apply_finding(routine: &Routine, error: &tokio_postgres::Error, source: &str) -> CheckFinding {
    let Some(db) = error.as_db_error() else {
        return finding(routine, "error", "", &error_chain(error), source);
    };
    let statement_line = match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(position)) => {
            line_of_char_position(&routine.create_sql, *position as usize) as u32
        }
        _ => 0,
    };
    let detail: Vec<String> = [
        db.detail().map(|d| format!("detail: {d}")),
        db.hint().map(|h| format!("hint: {h}")),
        db.where_()
            .map(|w| format!("context: {}", w.replace('\n', " / "))),
    ]
    .into_iter()
    .flatten()
    .collect();
    CheckFinding {
        line: file_line(routine, statement_line),
        statement_line,
        detail: detail.join("; "),
        ..finding(routine, "error", db.code().code(), db.message(), source)
    }
}

fn finding(
    routine: &Routine,
    level: &str,
    sqlstate: &str,
    message: &str,
    source: &str,
) -> CheckFinding {
    CheckFinding {
        routine: routine.identity.to_string(),
        source_path: routine.source_path.clone(),
        line: 0,
        statement_line: 0,
        level: level.into(),
        sqlstate: sqlstate.into(),
        message: message.into(),
        detail: String::new(),
        source: source.into(),
    }
}

/// The line in the routine's file, when the plan says where its statement
/// starts; 0 when unknown.
fn file_line(routine: &Routine, statement_line: u32) -> u32 {
    if routine.source_line == 0 || statement_line == 0 {
        0
    } else {
        routine.source_line + statement_line - 1
    }
}
