//! Smoke test calls, pipelined: every test's requests go out without waiting
//! for the answers to the previous ones (see `sql::pipeline`), in two
//! flights instead of three round trips per test.
//!
//! 1. Prepare every call inside one savepoint, rolled back at once (each
//!    with its routine's search path, set where it changes): prepared
//!    statements are not transactional, so they outlive the rollback. A call
//!    that does not parse (an unknown function, a wrong argument type) aborts
//!    the savepoint, and every prepare after it fails too; those calls are
//!    prepared again each in a savepoint of its own, so each error becomes
//!    its own test's `executes` check. One savepoint instead of
//!    one per call: a thousand-routine batch's smoke steps sent three
//!    requests per call here, two of them savepoint commands.
//! 2. Run every prepared call, each inside a savepoint that is rolled back
//!    afterwards, so a failing call aborts only its own savepoint and leaves
//!    no rows behind. Its routine's search path and its time bound (`SET
//!    LOCAL statement_timeout`) are set in the transaction, outside the
//!    savepoints, wherever they change from the call before, and set back to
//!    the session's after the last call: a call that changes either is undone
//!    with its savepoint. The settings, the savepoint and the call go out as
//!    one simple query, the rollback as the next: two requests per call. One message is also what keeps a call
//!    out of autocommit should the call before it have ended the agent's
//!    transaction (`txn_seal`): a message of several statements runs as an
//!    implicit transaction block, where `SAVEPOINT` is an error, so the call
//!    behind it never runs. (A `BEGIN` of its own ahead of each savepoint did
//!    that before, at the price of a request and a server-log WARNING, "there
//!    is already a transaction in progress", per call.) The call's text was
//!    prepared in flight 1, so it is exactly one statement; a newline after
//!    it ends a trailing `--` comment.
//!
//! What pipelining cannot do is tell which call raised a NOTICE or WARNING:
//! notices travel apart from the answers. So when any notice arrives, the
//! caller runs the calls again one by one (`checks::run_one`), where
//! each notice belongs to the call just made. Smoke calls are rolled back,
//! so running them twice leaves no rows behind (what escapes a rollback,
//! such as `nextval`, does happen twice).

use std::time::{Duration, Instant};

use pgrollout_shared::proto::SmokeCheck;
use pgrollout_shared::routine::{set_local_search_path_sql, SmokeTest};
use tokio_postgres::{Client, Statement};

use crate::sql::project_rows::count_rows_of_message;

use super::checks::{
    call_checks, call_settings, check, open_savepoint_in_path, time_bound_ms, warnings_check,
    ExpectedTypes, CLOSE_SAVEPOINT,
};
use crate::sql::pipeline::run_groups_in_order;
use crate::sql::{describe_error, TargetConnection};

/// The checks after `exists` of each test and its call's duration, in
/// order, or `None` when a notice arrived and the calls must be run one by
/// one to say whose it was.
pub async fn run_calls(
    conn: &mut TargetConnection,
    tests: &[&SmokeTest],
    types: &ExpectedTypes,
    progress: &mut (impl FnMut(usize, usize) + Send),
) -> Result<Option<Vec<(Vec<SmokeCheck>, Duration)>>, tokio_postgres::Error> {
    conn.take_notices();
    let prepared = prepare_all(&conn.client, tests).await?;
    let ran = run_prepared(&conn.client, tests, &prepared, progress).await?;
    // A flood (cancelled) is found again one by one, and reported there.
    if !conn.take_notices().is_empty() || conn.notices_overflowed() {
        return Ok(None);
    }
    let checks = tests
        .iter()
        .zip(prepared)
        .zip(ran)
        .map(|((test, prepared), ran)| match (prepared, ran) {
            (Err(error), _) => (
                vec![check(
                    "executes",
                    false,
                    describe_error(&error, Some(&test.call_sql)),
                )],
                Duration::ZERO,
            ),
            (Ok(statement), Some((result, elapsed))) => (
                checks_of_call(test, &statement, result, elapsed, types),
                elapsed,
            ),
            // Cannot happen (every prepared call is run, or the flight is an
            // `Err`); should it, the test fails rather than the agent.
            (Ok(_), None) => (
                vec![check(
                    "executes",
                    false,
                    "the call was prepared but not run".into(),
                )],
                Duration::ZERO,
            ),
        })
        .collect();
    Ok(Some(checks))
}

/// One pipelined request of a smoke test.
enum Request<'a> {
    /// A savepoint command, answered `Done`.
    Command(String),
    /// A setting inside the shared prepare savepoint, answered `Set` even
    /// when refused: a prepare before it aborted the savepoint, which is no
    /// failure of the connection (the prepares after it fail and are
    /// prepared again on their own).
    Setting(String),
    Prepare(&'a str),
    /// A call with its savepoint ahead of it, in one message.
    Call(CallMessage),
}

/// What one pipelined request answered. Errors of the test's own call are
/// kept as answers; an error of the surrounding savepoint commands is a
/// failure of the connection or transaction, returned as `Err`.
enum Answer {
    Done,
    Set,
    Prepared(Result<Statement, tokio_postgres::Error>),
    /// How many rows the call returned (never kept: `sql::project_rows`),
    /// and how many characters of the agent's preceded it in its message.
    Ran(Result<u64, tokio_postgres::Error>, usize),
}

/// One call as it is sent: its settings where they differ from the call
/// before's, its savepoint, then its text.
struct CallMessage {
    sql: String,
    prefix_chars: usize,
}

impl CallMessage {
    fn new(test: &SmokeTest, settings: Option<String>) -> CallMessage {
        let prefix = match settings {
            Some(settings) => format!("{settings}; {OPEN_CALL_SAVEPOINT}; "),
            None => format!("{OPEN_CALL_SAVEPOINT}; "),
        };
        CallMessage {
            prefix_chars: prefix.chars().count(),
            sql: format!("{prefix}{}\n", test.call_sql),
        }
    }
}

/// Each call's savepoint in flight 2 (its settings are set outside it).
const OPEN_CALL_SAVEPOINT: &str = "SAVEPOINT pgrollout_smoke";

/// After flight 2: the session's own search path and statement timeout.
const RESET_CALL_SETTINGS: &str =
    "SET LOCAL search_path TO DEFAULT; SET LOCAL statement_timeout TO DEFAULT";

/// Sends `request` on its first poll, like every tokio-postgres request.
async fn send(client: &Client, request: Request<'_>) -> Result<Answer, tokio_postgres::Error> {
    Ok(match request {
        Request::Command(sql) => {
            client.batch_execute(&sql).await?;
            Answer::Done
        }
        Request::Setting(sql) => {
            // Its error, if any, is the aborted savepoint's: the prepare that
            // aborted it is prepared again on its own.
            let _ = client.batch_execute(&sql).await;
            Answer::Set
        }
        Request::Prepare(sql) => Answer::Prepared(client.prepare(sql).await),
        Request::Call(call) => Answer::Ran(
            count_rows_of_message(client, &call.sql).await,
            call.prefix_chars,
        ),
    })
}

/// Flight 1: every call prepared in one savepoint; the calls whose prepare
/// failed — the one that does not parse and every one after it in the
/// aborted savepoint — prepared again, each in a savepoint of its own, so
/// each error is its own call's.
async fn prepare_all(
    client: &Client,
    tests: &[&SmokeTest],
) -> Result<Vec<Result<Statement, tokio_postgres::Error>>, tokio_postgres::Error> {
    let mut prepared = prepare_in_one_savepoint(client, tests).await?;
    let failed: Vec<usize> = (0..prepared.len())
        .filter(|&index| prepared[index].is_err())
        .collect();
    if failed.is_empty() {
        return Ok(prepared);
    }
    let again: Vec<&SmokeTest> = failed.iter().map(|&index| tests[index]).collect();
    let retried = prepare_each_in_savepoint(client, &again).await?;
    for (index, statement) in failed.into_iter().zip(retried) {
        prepared[index] = statement;
    }
    Ok(prepared)
}

/// Every call prepared inside one savepoint, each under its routine's
/// search path (a `SET LOCAL` where the path changes from the call before,
/// `public` where a test has none); rolling the savepoint back
/// undoes the settings and keeps the statements.
async fn prepare_in_one_savepoint(
    client: &Client,
    tests: &[&SmokeTest],
) -> Result<Vec<Result<Statement, tokio_postgres::Error>>, tokio_postgres::Error> {
    let mut current: Option<&[String]> = None;
    let mut groups: Vec<Vec<Request<'_>>> = Vec::with_capacity(tests.len() + 2);
    groups.push(vec![Request::Command(OPEN_PREPARE_SAVEPOINT.to_owned())]);
    for test in tests {
        let mut group = Vec::with_capacity(2);
        if current != Some(test.search_path.as_slice()) {
            current = Some(test.search_path.as_slice());
            let set = set_local_search_path_sql(&test.search_path);
            group.push(Request::Setting(set));
        }
        group.push(Request::Prepare(&test.call_sql));
        groups.push(group);
    }
    groups.push(vec![Request::Command(CLOSE_SAVEPOINT.to_owned())]);
    // Collected first: a lazy iterator of futures held across the awaits
    // makes the job's future lose `Send` (a higher-ranked closure).
    let requests: Vec<Vec<_>> = groups
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|request| send(client, request))
                .collect()
        })
        .collect();
    let mut prepared = Vec::with_capacity(tests.len());
    run_groups_in_order(requests, |_, answer| {
        if let Answer::Prepared(statement) = answer {
            prepared.push(statement);
        }
    })
    .await
    .map_err(|(_, error)| error)?;
    Ok(prepared)
}

/// The savepoint all calls are prepared in ([`CLOSE_SAVEPOINT`] ends it).
const OPEN_PREPARE_SAVEPOINT: &str = "SAVEPOINT pgrollout_smoke";

/// Each call prepared in a savepoint of its own, rolled back at once.
async fn prepare_each_in_savepoint(
    client: &Client,
    tests: &[&SmokeTest],
) -> Result<Vec<Result<Statement, tokio_postgres::Error>>, tokio_postgres::Error> {
    // Collected first: a lazy iterator of futures held across the awaits
    // makes the job's future lose `Send` (a higher-ranked closure).
    let requests: Vec<_> = tests
        .iter()
        .map(|test| {
            [
                // No time bound needed to prepare; the search path is.
                Request::Command(open_savepoint_in_path(test)),
                Request::Prepare(&test.call_sql),
                Request::Command(CLOSE_SAVEPOINT.to_owned()),
            ]
            .map(|request| send(client, request))
        })
        .collect();
    let mut prepared = Vec::with_capacity(tests.len());
    run_groups_in_order(requests, |_, answer| {
        if let Answer::Prepared(statement) = answer {
            prepared.push(statement);
        }
    })
    .await
    .map_err(|(_, error)| error)?;
    Ok(prepared)
}

/// Flight 2: every prepared call run in a savepoint with its time bound.
/// Each call's duration is the time between the answer to the rollback
/// before it and the answer to its own message: the server runs the
/// requests one after another, so that is the call's own time (plus its
/// savepoint's commands and the wire), and the bound itself is enforced by
/// the server's statement timeout, which PostgreSQL (13 and later) starts
/// again for each statement of a message, with the value just set.
async fn run_prepared(
    client: &Client,
    tests: &[&SmokeTest],
    prepared: &[Result<Statement, tokio_postgres::Error>],
    progress: &mut (impl FnMut(usize, usize) + Send),
) -> Result<Vec<Option<CallOutcome>>, tokio_postgres::Error> {
    // The search path and time bound are set in the transaction, outside the
    // calls' savepoints, where they change from one call to the next: rolling
    // a call's savepoint back undoes whatever the call set, so each call
    // starts from them as set. Two statements fewer per call than setting
    // them inside each savepoint.
    let mut current: Option<(&[String], u128)> = None;
    let mut requests: Vec<Vec<_>> = tests
        .iter()
        .zip(prepared)
        .filter(|(_, prepared)| prepared.is_ok())
        .map(|(test, _)| {
            let wanted = (test.search_path.as_slice(), time_bound_ms(test));
            let settings = (current != Some(wanted)).then(|| call_settings(test));
            current = Some(wanted);
            // A failed rollback (the call ended the transaction) stops the
            // flight before the agent sends anything else.
            [
                Request::Call(CallMessage::new(test, settings)),
                Request::Command(CLOSE_SAVEPOINT.to_owned()),
            ]
            .into_iter()
            .map(|request| send(client, request))
            .collect()
        })
        .collect();
    let total = requests.len();
    if current.is_some() {
        requests.push(vec![send(
            client,
            Request::Command(RESET_CALL_SETTINGS.to_owned()),
        )]);
    }
    let mut outcomes = Vec::new();
    let mut last_answer = Instant::now();
    run_groups_in_order(requests, |_, answer| {
        let now = Instant::now();
        if let Answer::Ran(result, prefix_chars) = answer {
            outcomes.push(((result, prefix_chars), now - last_answer));
            progress(outcomes.len(), total);
        }
        last_answer = now;
    })
    .await
    .map_err(|(_, error)| error)?;
    let mut outcomes = outcomes.into_iter();
    Ok(prepared
        .iter()
        .map(|prepared| prepared.as_ref().ok().and_then(|_| outcomes.next()))
        .collect())
}

type CallOutcome = ((Result<u64, tokio_postgres::Error>, usize), Duration);

/// `executes`, `structure`, `duration` and `warnings` of a call that ran
/// while no notice arrived.
fn checks_of_call(
    test: &SmokeTest,
    statement: &Statement,
    result: (Result<u64, tokio_postgres::Error>, usize),
    elapsed: Duration,
    types: &ExpectedTypes,
) -> Vec<SmokeCheck> {
    let mut checks = call_checks(test, statement, result, elapsed, types);
    checks.push(warnings_check(test, &[]));
    checks
}
