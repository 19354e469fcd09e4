//! Smoke tests (SEED.md "smoke-test.sh"): the routine exists in its schema,
//! runs with the test parameters, returns the expected columns and types,
//! finishes within its bound and raises no warnings — each check, and one
//! call run on its own. The bottom of `smoke/`: it imports neither the
//! runner nor the pipeline.
//!
//! Every call runs inside a savepoint that is rolled back, so a smoke test
//! leaves no rows behind. The caller owns the surrounding transaction.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrollout_shared::proto::SmokeCheck;
use pgrollout_shared::routine::{set_local_search_path_sql, Routine, SmokeTest};
use pgrollout_shared::smoke_compact::existence_detail;
use tokio_postgres::error::{DbError, Severity, SqlState};
use tokio_postgres::types::Type;

use crate::sql::{describe_error, describe_error_after, TargetConnection};

/// Whether each routine exists in its schema: one catalog query for all.
pub(super) async fn check_exists(
    conn: &TargetConnection,
    routines: &[Routine],
    oids: &[u32],
) -> Result<Vec<SmokeCheck>, tokio_postgres::Error> {
    let signatures =
        crate::jobs::steps::apply::signatures_unless_known(conn, routines, oids).await?;
    let rows = conn
        .client
        .query_typed(
            // A known oid spares the signature's parse; unnest pads the
            // shorter list (no oids, or no signatures) with NULLs.
            "SELECT n.nspname::text FROM unnest($1::text[], $2::oid[]) WITH ORDINALITY AS wanted(signature, known_oid, position) \
             LEFT JOIN pg_proc p ON p.oid = coalesce(wanted.known_oid, to_regprocedure(wanted.signature)::oid) \
             LEFT JOIN pg_namespace n ON n.oid = p.pronamespace ORDER BY wanted.position",
            &[(&signatures, Type::TEXT_ARRAY), (&oids, Type::OID_ARRAY)],
        )
        .await?;
    Ok(routines
        .iter()
        .zip(rows)
        .map(|(routine, row)| match row.get::<_, Option<String>>(0) {
            Some(schema) if schema == routine.identity.schema => {
                check("exists", true, existence_detail(&routine.identity, &schema))
            }
            Some(schema) => check(
                "exists",
                false,
                format!(
                    "found in schema {schema}, expected {}",
                    routine.identity.schema
                ),
            ),
            None => check(
                "exists",
                false,
                format!("{} not found in the catalog", routine.identity),
            ),
        })
        .collect())
}

/// The type each expected column names, as the database resolves it (so
/// `integer` matches int4): every test's types in one query, not one query
/// per test.
pub(super) async fn resolve_expected_types(
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<ExpectedTypes, tokio_postgres::Error> {
    let mut names: Vec<&str> = routines
        .iter()
        .flat_map(|r| &r.smoke_tests)
        .flat_map(|t| &t.expect_columns)
        .map(|c| c.type_name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Ok(ExpectedTypes::new());
    }
    let rows = conn
        .client
        .query_typed(
            "SELECT to_regtype(t)::oid FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(names
        .iter()
        .zip(&rows)
        .map(|(name, row)| ((*name).to_owned(), row.get(0)))
        .collect())
}

/// A call run on its own ([`run_one`]) runs in this savepoint, with its time
/// bound and its routine's search path, and the savepoint is always rolled
/// back after it (which undoes both settings).
fn open_savepoint(test: &SmokeTest) -> String {
    format!(
        "SAVEPOINT pgrollout_smoke; {}",
        call_settings(test).join("; ")
    )
}

/// What a test's call runs with: its routine's search path and its time
/// bound, as `SET LOCAL`s (two statements).
pub(super) fn call_settings(test: &SmokeTest) -> [String; 2] {
    [
        set_local_search_path_sql(&test.search_path),
        format!("SET LOCAL statement_timeout = {}", time_bound_ms(test)),
    ]
}

/// The test's time bound in milliseconds (0 would mean none).
pub(super) fn time_bound_ms(test: &SmokeTest) -> u128 {
    test.max_duration.as_millis().max(1)
}

/// The savepoint with the routine's search path, no time bound: where a
/// call is prepared (its names resolve as they will when it runs).
pub(super) fn open_savepoint_in_path(test: &SmokeTest) -> String {
    format!(
        "SAVEPOINT pgrollout_smoke; {}",
        set_local_search_path_sql(&test.search_path)
    )
}

pub(super) use crate::jobs::context::txn_seal::CLOSE_SAVEPOINT;

/// Expected type name → its oid, `None` when the database knows no such type.
pub(super) type ExpectedTypes = HashMap<String, Option<u32>>;

/// Runs one test call in a rolled-back savepoint and returns the checks after
/// `exists`: executes, structure, duration, warnings.
pub(super) async fn run_one(
    conn: &mut TargetConnection,
    test: &SmokeTest,
    types: &ExpectedTypes,
) -> Result<Vec<SmokeCheck>, tokio_postgres::Error> {
    conn.take_notices();
    let outcome = call_and_check(conn, test, types).await;
    let notices = conn.take_notices();
    conn.client.batch_execute(CLOSE_SAVEPOINT).await?;
    let mut checks = outcome?;
    if conn.notices_overflowed() {
        // The agent cancelled the call: say why, not "time bound".
        return Ok(vec![check(
            "executes",
            false,
            format!(
                "the call raised more than {} MB of notices; the agent cancelled it",
                crate::sql::notices::MAX_NOTICE_BYTES / (1024 * 1024)
            ),
        )]);
    }
    checks.push(warnings_check(test, &notices));
    Ok(checks)
}

/// The `warnings` check of a call that raised `notices`.
pub(super) fn warnings_check(test: &SmokeTest, notices: &[DbError]) -> SmokeCheck {
    let warnings: Vec<String> = notices
        .iter()
        .filter(|n| matches!(n.parsed_severity(), Some(Severity::Warning)))
        .map(|n| n.message().to_owned())
        .collect();
    let others: Vec<String> = notices
        .iter()
        .filter(|n| !matches!(n.parsed_severity(), Some(Severity::Warning)))
        .map(|n| format!("{}: {}", n.severity(), n.message()))
        .collect();
    match (warnings.is_empty(), test.allow_warnings) {
        (true, _) if others.is_empty() => check("warnings", true, "no errors or warnings".into()),
        (true, _) => check(
            "warnings",
            true,
            format!("no warnings ({})", others.join("; ")),
        ),
        (false, true) => check(
            "warnings",
            true,
            format!("warnings allowed: {}", warnings.join("; ")),
        ),
        (false, false) => check(
            "warnings",
            false,
            format!("WARNING raised: {}", warnings.join("; ")),
        ),
    }
}

/// Opens the test's savepoint (with its time bound) and prepares its call,
/// the two pipelined: the savepoint's request is queued first, so the
/// server still runs it before the PREPARE, and both cost one round trip.
async fn open_savepoint_and_prepare(
    conn: &TargetConnection,
    test: &SmokeTest,
) -> Result<Result<tokio_postgres::Statement, tokio_postgres::Error>, tokio_postgres::Error> {
    let savepoint = open_savepoint(test);
    let mut opened = std::pin::pin!(futures_util::future::maybe_done(
        conn.client.batch_execute(&savepoint)
    ));
    // One poll queues the savepoint's request ahead of the PREPARE.
    let _ = futures_util::poll!(opened.as_mut());
    let prepared = conn.client.prepare(&test.call_sql).await;
    opened.as_mut().await;
    match opened.as_mut().take_output() {
        Some(Err(error)) => Err(error),
        _ => Ok(prepared),
    }
}

/// The checks that depend on running the call. A server error of the call
/// is a failed check; only a broken connection is an `Err`.
async fn call_and_check(
    conn: &TargetConnection,
    test: &SmokeTest,
    types: &ExpectedTypes,
) -> Result<Vec<SmokeCheck>, tokio_postgres::Error> {
    let statement = match open_savepoint_and_prepare(conn, test).await? {
        Ok(statement) => statement,
        Err(error) if error.as_db_error().is_some() => {
            return Ok(vec![check(
                "executes",
                false,
                describe_error(&error, Some(&test.call_sql)),
            )])
        }
        Err(error) => return Err(error),
    };
    let started = Instant::now();
    let result = crate::sql::project_rows::count_rows(&conn.client, &statement).await;
    let elapsed = started.elapsed();
    match result {
        Err(error) if error.as_db_error().is_none() => Err(error),
        result => Ok(call_checks(test, &statement, (result, 0), elapsed, types)),
    }
}

/// Why a procedure's COMMIT or ROLLBACK fails in a smoke call (2D000), for
/// whoever reads the report: the call always runs inside a transaction.
const IN_A_TRANSACTION: &str = " — a smoke call runs inside a transaction (the deploy's, and \
     a rolled-back one after COMMIT), where a procedure cannot COMMIT or ROLLBACK: give it arguments \
     that do not reach them, or declare no smoke test for it";

/// `executes`, and then `structure` and `duration`, of a call that answered
/// `result` after `elapsed`. A server error of the call is a failed check;
/// `prefix_chars`: what the agent sent ahead of the call in its message
/// (the server counts an error's position from the message's start).
pub(super) fn call_checks(
    test: &SmokeTest,
    statement: &tokio_postgres::Statement,
    (result, prefix_chars): (Result<u64, tokio_postgres::Error>, usize),
    elapsed: Duration,
    types: &ExpectedTypes,
) -> Vec<SmokeCheck> {
    let bound = format!("bound {}", humantime::format_duration(test.max_duration));
    let rows = match result {
        Ok(count) => count,
        Err(error) if error.code() == Some(&SqlState::QUERY_CANCELED) => {
            return vec![
                check("executes", false, "cancelled at the time bound".into()),
                check(
                    "duration",
                    false,
                    format!(
                        "over the {bound}: stopped after {:.2}s",
                        elapsed.as_secs_f64()
                    ),
                ),
            ]
        }
        Err(error) => {
            let mut text = describe_error_after(&error, Some(&test.call_sql), prefix_chars);
            if error.code() == Some(&SqlState::INVALID_TRANSACTION_TERMINATION) {
                text.push_str(IN_A_TRANSACTION);
            }
            return vec![check("executes", false, text)];
        }
    };
    let within = elapsed <= test.max_duration;
    vec![
        check("executes", true, format!("returned {rows} row(s)")),
        check_structure(test, statement.columns(), types),
        check(
            "duration",
            within,
            format!(
                "{:.3}s ({})",
                elapsed.as_secs_f64(),
                if within {
                    format!("OK, {bound}")
                } else {
                    format!("over the {bound}")
                }
            ),
        ),
    ]
}

fn check_structure(
    test: &SmokeTest,
    columns: &[tokio_postgres::Column],
    types: &ExpectedTypes,
) -> SmokeCheck {
    let actual: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", c.name(), c.type_().name()))
        .collect();
    if test.expect_columns.is_empty() {
        return check(
            "structure",
            true,
            format!("not declared; returned ({})", actual.join(", ")),
        );
    }
    let expected_oids: Vec<Option<u32>> = test
        .expect_columns
        .iter()
        .map(|c| types.get(&c.type_name).copied().flatten())
        .collect();
    let mut problems = Vec::new();
    for (index, (expected, oid)) in test.expect_columns.iter().zip(&expected_oids).enumerate() {
        match (columns.get(index), oid) {
            (_, None) => problems.push(format!("{:?} is not a known type", expected.type_name)),
            (None, _) => problems.push(format!(
                "missing column {} {}",
                expected.name, expected.type_name
            )),
            (Some(column), Some(oid)) => {
                if column.name() != expected.name || column.type_().oid() != *oid {
                    problems.push(format!(
                        "column {} is {} {}, expected {} {}",
                        index + 1,
                        column.name(),
                        column.type_().name(),
                        expected.name,
                        expected.type_name
                    ));
                }
            }
        }
    }
    if columns.len() > test.expect_columns.len() {
        problems.push(format!(
            "{} unexpected extra column(s)",
            columns.len() - test.expect_columns.len()
        ));
    }
    if problems.is_empty() {
        check(
            "structure",
            true,
            format!("returns ({})", actual.join(", ")),
        )
    } else {
        check("structure", false, problems.join("; "))
    }
}

pub(super) fn check(name: &str, passed: bool, detail: String) -> SmokeCheck {
    SmokeCheck {
        check: name.into(),
        passed,
        detail,
    }
}
