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
//! 2. Run every prepared call inside one savepoint that is rolled back to
//!    before the next call and after the last, so a failing call aborts only
//!    itself and no call sees another's rows or leaves any behind. Its
//!    routine's search path and its time bound (`SET LOCAL
//!    statement_timeout`) are set in the transaction, outside the savepoint,
//!    wherever they change from the call before, and set back to the
//!    session's after the last call: a call that changes either is undone
//!    with the rollback. One simple query per call: the rollback of the call
//!    before (and the settings and the savepoint where they change), then the
//!    call. One message is also what keeps a call out of autocommit should
//!    the call before it have ended the agent's transaction (`txn_seal`): a
//!    message of several statements runs as an implicit transaction block,
//!    where `ROLLBACK TO SAVEPOINT` and `SAVEPOINT` are errors, so the call
//!    behind it never runs, and the agent stops there. (A `BEGIN` of its own
//!    ahead of each savepoint did that before, at the price of a request and
//!    a server-log WARNING, "there is already a transaction in progress",
//!    per call; three requests per call then, one now.) The call's text was
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
use crate::sql::pipeline::{run_groups_in_order, run_in_order};
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
    Ran(Ran),
}

/// What a call's message answered.
struct Ran {
    /// How many rows the call returned (never kept: `sql::project_rows`).
    rows: Result<u64, tokio_postgres::Error>,
    /// How many characters of the agent's preceded the call in its message.
    prefix_chars: usize,
}

/// One call as it is sent, in one message: the agent's statements (the
/// rollback of the call before, its settings where they change, the
/// savepoint), then the call's text.
struct CallMessage {
    sql: String,
    /// How many of the message's statements are the agent's.
    agent_statements: usize,
    /// How many characters they take, with their separators.
    prefix_chars: usize,
}

impl CallMessage {
    fn new(agent_statements: Vec<String>, test: &SmokeTest) -> CallMessage {
        let prefix = format!("{}; ", agent_statements.join("; "));
        CallMessage {
            agent_statements: agent_statements.len(),
            prefix_chars: prefix.chars().count(),
            sql: format!("{prefix}{}\n", test.call_sql),
        }
    }
}

/// The savepoint every call of flight 2 runs in: opened once, rolled back
/// to before each next call (which keeps it, undone, for that call), and
/// released after the last.
const CALL_SAVEPOINT: &str = "SAVEPOINT pgrollout_smoke";
const BACK_TO_CALL_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT pgrollout_smoke";
const RELEASE_CALL_SAVEPOINT: &str = "RELEASE SAVEPOINT pgrollout_smoke";

/// After flight 2: the last call undone, and the session's own search path
/// and statement timeout.
const END_OF_CALLS: &str = "ROLLBACK TO SAVEPOINT pgrollout_smoke; \
    RELEASE SAVEPOINT pgrollout_smoke; \
    SET LOCAL search_path TO DEFAULT; SET LOCAL statement_timeout TO DEFAULT";

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
        Request::Call(call) => match count_rows_of_message(client, &call.sql).await {
            // One of the agent's statements failed (the call before ended
            // the transaction, or released the savepoint): the flight stops.
            (completed, Err(error)) if completed < call.agent_statements => return Err(error),
            (_, rows) => Answer::Ran(Ran {
                rows,
                prefix_chars: call.prefix_chars,
            }),
        },
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

/// Flight 2: every prepared call run in a savepoint, rolled back after it,
/// one message per call. Each call's duration is the time between the
/// answer to the message before and the answer to its own: the server runs
/// the requests one after another, so that is the call's own time (plus the
/// rollback of the call before and the wire), and the bound itself is
/// enforced by the server's statement timeout, which PostgreSQL (13 and
/// later) starts again for each statement of a message, with the value
/// just set.
async fn run_prepared(
    client: &Client,
    tests: &[&SmokeTest],
    prepared: &[Result<Statement, tokio_postgres::Error>],
    progress: &mut (impl FnMut(usize, usize) + Send),
) -> Result<Vec<Option<CallOutcome>>, tokio_postgres::Error> {
    // The search path and time bound are set in the transaction, outside the
    // savepoint, where they change from one call to the next: rolling the
    // savepoint back undoes whatever a call set, so each call starts from
    // them as set. The rollback of one call and the next call share a
    // message: a message of several statements runs as an implicit
    // transaction block when no transaction is open, where `ROLLBACK TO
    // SAVEPOINT` (like `SAVEPOINT`) is an error, so a call behind one that
    // ended the transaction never runs.
    let mut current: Option<(&[String], u128)> = None;
    let mut requests: Vec<_> = tests
        .iter()
        .zip(prepared)
        .filter(|(_, prepared)| prepared.is_ok())
        .map(|(test, _)| {
            let wanted = (test.search_path.as_slice(), time_bound_ms(test));
            let mut agent_statements = Vec::with_capacity(5);
            if current.is_some() {
                agent_statements.push(BACK_TO_CALL_SAVEPOINT.to_owned());
            }
            if current != Some(wanted) {
                if current.is_some() {
                    agent_statements.push(RELEASE_CALL_SAVEPOINT.to_owned());
                }
                agent_statements.extend(call_settings(test));
                agent_statements.push(CALL_SAVEPOINT.to_owned());
            }
            current = Some(wanted);
            send(
                client,
                Request::Call(CallMessage::new(agent_statements, test)),
            )
        })
        .collect();
    let total = requests.len();
    if current.is_some() {
        requests.push(send(client, Request::Command(END_OF_CALLS.to_owned())));
    }
    let mut outcomes = Vec::new();
    let mut last_answer = Instant::now();
    run_in_order(requests, |_, answer| {
        let now = Instant::now();
        if let Answer::Ran(ran) = answer {
            outcomes.push((ran, now - last_answer));
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

type CallOutcome = (Ran, Duration);

/// `executes`, `structure`, `duration` and `warnings` of a call that ran
/// while no notice arrived.
fn checks_of_call(
    test: &SmokeTest,
    statement: &Statement,
    ran: Ran,
    elapsed: Duration,
    types: &ExpectedTypes,
) -> Vec<SmokeCheck> {
    let mut checks = call_checks(
        test,
        statement,
        (ran.rows, ran.prefix_chars),
        elapsed,
        types,
    );
    checks.push(warnings_check(test, &[]));
    checks
}
