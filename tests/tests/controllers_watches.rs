//! Issue 18, items 2 and 3, for the post-deploy watches: two controllers on
//! one PostgreSQL store, as real processes, each with a dev agent of its own.
//! Only the controller holding the watches' lease samples — a watch created
//! through the other one included — and an ex-leader frozen (SIGSTOP) with a
//! sample's record already sent to the store is refused by the fencing
//! token once the lease moved on: the store keeps no write of it after the
//! takeover, and the new leader samples on.

mod watch_support;

use std::time::Duration;

use anyhow::{ensure, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{PgCluster, Process, Stack, StackOptions};
use watch_support::{deploy, watch_id, write, FAST};

const WAIT: Duration = Duration::from_secs(30);

/// A (the stack's controller) and B on one store, each with its own agent.
struct Duo {
    stack: Stack,
    store: PgCluster,
    client: Client,
    a_operators: String,
    b_operators: String,
    b: Process,
    _b_agent: Process,
}

/// A starts first and takes every lease; B starts beside it. `name` is
/// deployed, ready to be watched.
async fn duo(name: &str) -> Result<Duo> {
    let store = PgCluster::start("store").await?;
    let stack = Stack::start_with(StackOptions {
        store_url: Some(store.url()),
        ..StackOptions::default()
    })
    .await?;
    let client = store.connect().await?;
    let (holder, _) = lease_taken(&client, 0).await?;
    ensure!(
        holder.ends_with(&port_suffix(&stack.operators)),
        "A leads the watches: {holder}"
    );
    let other = stack.other_controller("b")?;
    let b = stack.spawn_controller(&other, "controller-b").await?;
    let b_agent = stack.spawn_agent_for(&other, "b").await?;
    write(&stack, name, FAST)?;
    deploy(&stack, name).await?;
    Ok(Duo {
        a_operators: stack.operators.clone(),
        b_operators: other.operators.clone(),
        stack,
        store,
        client,
        b,
        _b_agent: b_agent,
    })
}

/// `:<port>` of an operators' address, as a controller's id in the store ends.
fn port_suffix(address: &str) -> String {
    format!(":{}", address.rsplit(':').next().unwrap_or_default())
}

/// Waits until some controller holds the watches' lease under a token above
/// `above`; returns holder and token.
async fn lease_taken(client: &Client, above: i64) -> Result<(String, i64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = client
            .query_opt(
                "SELECT holder, token FROM leases WHERE name = 'watches'",
                &[],
            )
            .await?;
        if let Some(row) = row {
            let (holder, token): (String, i64) = (row.get(0), row.get(1));
            if token > above {
                return Ok((holder, token));
            }
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "nobody took the watches' lease over token {above}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The samples recorded on `watch`, as the store counts them.
async fn samples(client: &Client, watch: &str) -> Result<i64> {
    Ok(client
        .query_one("SELECT samples FROM watches WHERE id = $1", &[&watch])
        .await?
        .get(0))
}

/// Waits until `watch` has more than `above` samples recorded.
async fn sampled_past(client: &Client, watch: &str, above: i64) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = samples(client, watch).await?;
        if now > above {
            return Ok(now);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "watch {watch} stays at {now} sample(s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Store sessions busy with a watch's record: (waiting on a lock, running,
/// running or in its transaction not yet ended).
async fn records_in_flight(client: &Client) -> Result<(i64, i64, i64)> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),
                    count(*) FILTER (WHERE state = 'active'),
                    count(*) FILTER (WHERE state IN ('active', 'idle in transaction'))
             FROM pg_stat_activity WHERE query LIKE 'UPDATE watches SET last_sample%'",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Polls [`records_in_flight`] until `done` holds of it (`pg_stat_activity`
/// has no event to await); fails with `what` after [`WAIT`].
async fn until_records(
    client: &Client,
    what: &str,
    done: impl Fn((i64, i64, i64)) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(records_in_flight(client).await?) {
        ensure!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `alert create <name> dev --every <every>`, through the controller whose
/// operators' address the stack points at.
async fn create_watch(stack: &Stack, name: &str, every: &str) -> Result<String> {
    let project = stack.project.to_string_lossy().to_string();
    let out = stack
        .cli(&[
            "alert",
            "create",
            name,
            "dev",
            "--every",
            every,
            "--for",
            "10m",
            "--project",
            &project,
        ])
        .await?;
    ensure!(out.code == 0, "{out}");
    watch_id(&out)
}

/// Lines of `process` mentioning a sample of `watch`, after the first `from`.
fn sample_lines(process: &Process, watch: &str, from: usize) -> Vec<String> {
    process
        .output_so_far()
        .lines()
        .skip(from)
        .filter(|line| line.contains("watch sampled") && line.contains(watch))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_watch_created_through_a_controller_that_does_not_lead_is_sampled_by_the_leader_only(
) -> Result<()> {
    let mut duo = duo("wled").await?;
    // Created through B, which does not hold the watches' lease (its agent
    // takes the baseline).
    duo.stack.operators = duo.b_operators.clone();
    let watch = create_watch(&duo.stack, "wled", "1s").await?;
    duo.stack.operators = duo.a_operators.clone();

    // A, the leader, picks it up and samples it; B never does.
    sampled_past(&duo.client, &watch, 2).await?;
    let a_samples = sample_lines(&duo.stack.controller, &watch, 0);
    ensure!(
        !a_samples.is_empty(),
        "the leader A samples the watch:\n{}",
        duo.stack.controller.output_so_far()
    );
    let b_samples = sample_lines(&duo.b, &watch, 0);
    assert!(
        b_samples.is_empty(),
        "B, which does not lead, sampled the watch it created: {b_samples:?}"
    );
    drop(duo.store);
    Ok(())
}

#[tokio::test]
async fn an_ex_leader_frozen_with_a_sample_in_flight_is_refused_by_the_fencing_token() -> Result<()>
{
    let mut duo = duo("wfence").await?;
    let (a_holder, a_token) = lease_taken(&duo.client, 0).await?;
    // Every 5 s: B's first sample comes that long after it takes over,
    // which leaves the time to read what A's late record did.
    let watch = create_watch(&duo.stack, "wfence", "5s").await?;
    sampled_past(&duo.client, &watch, 0).await?;

    // A's next record is held at the store: a second session holds the
    // watches table in SHARE mode, so the UPDATE waits before it is run
    // (before it checks anything). That record is A's write in flight.
    let locker = duo.store.connect().await?;
    locker
        .batch_execute("BEGIN; LOCK TABLE watches IN SHARE MODE")
        .await?;
    until_records(
        &duo.client,
        "A's record never reached the store",
        |(locked, _, _)| locked > 0,
    )
    .await?;
    let before = samples(&duo.client, &watch).await?;

    // A freezes with its record sent: it neither renews nor learns it lost.
    duo.stack.controller.signal("STOP")?;
    let (b_holder, b_token) = lease_taken(&duo.client, a_token).await?;
    ensure!(
        b_holder.ends_with(&port_suffix(&duo.b_operators)) && b_holder != a_holder,
        "B took the watches over: {b_holder}"
    );

    // The table is free again: A's record runs now, after the takeover.
    locker.batch_execute("ROLLBACK").await?;
    until_records(&duo.client, "A's record never ran", |(_, running, _)| {
        running == 0
    })
    .await?;

    // Thawed, A ends what it had in flight and says it lost the lease. Its
    // stale token was refused: the store keeps nothing of its record (B's
    // first sample comes 5 s after its takeover, later than this).
    let a_lines = duo.stack.controller.output_so_far().lines().count();
    let mark = duo.stack.controller.mark();
    duo.stack.controller.signal("CONT")?;
    duo.stack
        .controller
        .wait_for_line_after(mark, "no longer the leader", WAIT)
        .await?;
    until_records(&duo.client, "A's record never ended", |(_, _, open)| {
        open == 0
    })
    .await?;
    assert_eq!(
        samples(&duo.client, &watch).await?,
        before,
        "the ex-leader's record, made after the takeover, left no sample"
    );
    ensure!(
        sample_lines(&duo.b, &watch, 0).is_empty(),
        "B sampled sooner than its interval, the check above proves nothing"
    );

    // B samples on; A samples no more.
    let after = sampled_past(&duo.client, &watch, before).await?;
    ensure!(after > before);
    ensure!(
        !sample_lines(&duo.b, &watch, 0).is_empty(),
        "B took the samples:\n{}",
        duo.b.output_so_far()
    );
    let late = sample_lines(&duo.stack.controller, &watch, a_lines);
    assert!(
        late.is_empty(),
        "A sampled after it lost the lease: {late:?}"
    );
    let (holder, token) = lease_taken(&duo.client, 0).await?;
    assert_eq!((holder, token), (b_holder, b_token), "B keeps the lease");
    ensure!(duo.b.exit_status()?.is_none(), "B still runs");
    drop(duo.store);
    Ok(())
}
