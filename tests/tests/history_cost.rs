//! Issue 17: costs that do not grow with history. One controller, measured
//! twice in one run — on a store with a handful of rollouts, then after
//! `pgrollout store-fill` added 5,000 rollouts (batches of 1,000 routines
//! among them) and 20,000 audit entries through the store's own API — with
//! the real binaries over mutual TLS. The controller's time before dispatch
//! of a single-routine rollback (its `rollback dispatched` log line) must not
//! grow with the store; the rollback, `audit verify`, `status` and
//! `rollouts` must still work on the larger store. The same for a
//! `/metrics` scrape: its time must not grow with the store either, and its
//! figures must count what the fill added (written by another process).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pgrollout_tests::http_get::http_request;
use pgrollout_tests::{free_port, run_command, OutputMark, Stack, StackOptions};

/// Rollbacks timed per store size (the fastest is compared).
const ROUNDS: usize = 5;
/// Filling 5,000 rollouts takes a debug build a while.
const FILL_TIMEOUT: Duration = Duration::from_secs(900);

/// Deploys a new version of reconcilemupstream and rolls it back `ROUNDS`
/// times; returns each rollback's controller time before dispatch, in µs.
async fn rollback_times(stack: &Stack, round_base: usize) -> Result<Vec<u64>> {
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    let source = std::fs::read_to_string(&path)?;
    let mut times = Vec::new();
    for round in round_base..round_base + ROUNDS {
        // A new body each round: every deploy is a change to undo.
        stack.write_procedure(
            "reconcilemupstream.sql",
            &source.replacen("BEGIN\n", &format!("BEGIN\n  -- round {round}\n"), 1),
        )?;
        let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
        assert_eq!(out.code, 0, "{out}");
        let mark = stack.controller.mark();
        let out = stack
            .cli(&["rollback", "reconcilemupstream", "dev"])
            .await?;
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stdout.contains("SUCCESS"), "{out}");
        let line = stack
            .controller
            .wait_for_line_after(mark, "rollback dispatched", Duration::from_secs(10))
            .await?;
        times.push(field(&line, "before_dispatch_us")?);
    }
    Ok(times)
}

/// `name=123` from a log line (its colours taken out).
fn field(line: &str, name: &str) -> Result<u64> {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let line = plain.as_str();
    let start = line
        .find(&format!("{name}="))
        .with_context(|| format!("no {name} in {line:?}"))?
        + name.len()
        + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .with_context(|| format!("{name} in {line:?}"))
}

/// The fastest of the rounds: what the work costs. A busy machine only ever
/// adds time (scheduling, other builds), so the minimum is the figure noise
/// disturbs least; a lookup that became a scan of 5,000 rollouts costs every
/// round, the fastest included.
fn fastest(times: &[u64]) -> u64 {
    times.iter().copied().min().unwrap_or(u64::MAX)
}

/// `pgrollout store-fill` of the stack's controller store.
async fn fill(stack: &Stack, extra: &[&str]) -> Result<()> {
    let config = stack.dir.path().join("controller.toml");
    let config = config.to_string_lossy();
    let mut args = vec!["store-fill", "--config", &config, "--environment", "dev"];
    args.extend_from_slice(extra);
    let fill = run_command(&stack.bins.controller, args, &[], FILL_TIMEOUT).await?;
    ensure!(fill.code == 0, "{fill}");
    Ok(())
}

/// `GET /metrics` over a fresh connection: the body and the wall time.
async fn scrape(port: u16) -> Result<(String, u64)> {
    let started = Instant::now();
    let (head, body) = http_request(port, "GET", "/metrics").await?;
    let elapsed = u64::try_from(started.elapsed().as_micros())?;
    ensure!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    Ok((body, elapsed))
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// `ROUNDS` scrapes; each one's time in µs, and the last body.
async fn scrape_times(port: u16) -> Result<(Vec<u64>, String)> {
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..ROUNDS {
        let (text, micros) = scrape(port).await?;
        times.push(micros);
        body = text;
    }
    Ok((times, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_scrape_does_not_grow_with_the_store() -> Result<()> {
    let port = free_port();
    let stack = Stack::start_with(StackOptions {
        controller_extra: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..StackOptions::default()
    })
    .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack
        .cli(&["rollback", "reconcilemupstream", "dev"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let (small, before) = scrape_times(port).await?;

    // Small rollouts, so the fill is quick; many, so a scrape that reads
    // them all shows.
    fill(
        &stack,
        &[
            "--rollouts",
            "20000",
            "--batch-every",
            "0",
            "--routine-bytes",
            "200",
        ],
    )
    .await?;
    // The first scrape after the fill applies what it added once.
    let (catch_up, _) = scrape(port).await?;
    let (large, after) = scrape_times(port).await?;
    let (small_fastest, large_fastest) = (fastest(&small), fastest(&large));
    eprintln!(
        "/metrics, fastest of {ROUNDS}: {small_fastest} µs with 2 rollouts, {large_fastest} µs after 20,000 more"
    );
    assert!(
        large_fastest <= 3 * small_fastest.max(5_000),
        "a /metrics scrape grew with the store: fastest {small_fastest} µs with 2 rollouts ({small:?}), \
         {large_fastest} µs after 20,000 more ({large:?})"
    );

    // The figures are still those of the whole history: the fill's plans
    // name one routine of four, so they count as batches.
    let batches = "pgrollout_deployments_total{kind=\"batch\",environment=\"dev\"}";
    assert_eq!(sample(&before, batches), None, "{before}");
    for text in [&catch_up, &after] {
        assert_eq!(sample(text, batches), Some(20_000.0), "{text}");
        assert_eq!(
            sample(
                text,
                "pgrollout_deploy_duration_seconds_count{environment=\"dev\",kind=\"batch\"}"
            ),
            Some(20_000.0)
        );
    }
    for text in [&before, &after] {
        assert_eq!(
            sample(
                text,
                "pgrollout_deployments_total{procedure=\"reconcilemupstream\",environment=\"dev\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                text,
                "pgrollout_rollbacks_total{procedure=\"reconcilemupstream\",environment=\"dev\"}"
            ),
            Some(1.0),
            "{text}"
        );
    }
    assert_eq!(
        sample(
            &after,
            "pgrollout_rollouts{kind=\"deploy\",state=\"succeeded\"}"
        ),
        Some(20_000.0),
        "{after}"
    );
    // `pgrollout metrics` reads the same summary, by the plans' labels.
    let out = stack
        .cli(&["metrics", "bench_fill_0", "--env", "dev"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("bench_fill_0"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollbacks_controller_time_does_not_grow_with_the_store() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let small = rollback_times(&stack, 0).await?;

    fill(
        &stack,
        &[
            "--rollouts",
            "5000",
            "--batch-every",
            "1000",
            "--batch-size",
            "1000",
            "--audit",
            "20000",
        ],
    )
    .await?;
    let large = rollback_times(&stack, ROUNDS).await?;

    let (small_fastest, large_fastest) = (fastest(&small), fastest(&large));
    eprintln!(
        "controller time before dispatch, fastest of {ROUNDS}: {small_fastest} µs with a few rollouts, \
         {large_fastest} µs after 5,000 more"
    );
    // A floor of 5 ms keeps scheduling noise on a busy machine from reading
    // as growth when the small store's figure is tiny.
    assert!(
        large_fastest <= 3 * small_fastest.max(5_000),
        "the controller's time before dispatching a rollback grew with the store: \
         fastest {small_fastest} µs with a few rollouts ({small:?}), {large_fastest} µs after 5,000 more ({large:?})"
    );

    // The filled store still works as a whole.
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    assert!(verify.stdout.contains("audit log intact"), "{verify}");
    let rollouts = stack.cli(&["rollouts", "--limit", "3"]).await?;
    assert_eq!(rollouts.code, 0, "{rollouts}");
    assert!(rollouts.stdout.contains("rollback"), "{rollouts}");
    let status = stack.cli(&["status", "r-fill-4999"]).await?;
    assert_eq!(status.code, 0, "{status}");
    Ok(())
}

const SUMMARY_BUILT: &str = "metrics: summary built from the store";

/// The rollouts and µs of the controller's first "summary built" line after
/// `mark` (since its start without one).
async fn summary_built(stack: &Stack, mark: Option<OutputMark>) -> Result<(u64, u64)> {
    let wait = Duration::from_secs(120);
    let line = match mark {
        Some(mark) => {
            stack
                .controller
                .wait_for_line_after(mark, SUMMARY_BUILT, wait)
                .await?
        }
        None => stack.controller.wait_for_line(SUMMARY_BUILT, wait).await?,
    };
    Ok((field(&line, "rollouts")?, field(&line, "build_us")?))
}

/// A stack with `/metrics` on, its store filled with `rollouts` rollouts of
/// 4 routines of 2 kB each (store-fill's default plans), `edit` applied to
/// the store, then the controller restarted over it: the stack, the metrics
/// port, and the rollouts and µs of the summary's rebuild at start.
async fn restarted_over(
    rollouts: &str,
    edit: impl FnOnce(&rusqlite::Connection) -> Result<()>,
) -> Result<(Stack, u16, u64, u64)> {
    let port = free_port();
    let mut stack = Stack::start_with(StackOptions {
        controller_extra: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..StackOptions::default()
    })
    .await?;
    fill(&stack, &["--rollouts", rollouts, "--batch-every", "0"]).await?;
    {
        let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
        store.busy_timeout(Duration::from_secs(10))?;
        edit(&store)?;
    }
    stack.kill_9_and_restart_controller(|c| c).await?;
    let (built, micros) = summary_built(&stack, None).await?;
    Ok((stack, port, built, micros))
}

/// The first scrape after a restart, and after a change that arrives out of
/// order (an operator resolving a rollout that was in doubt since long ago),
/// rebuild the metrics' summary from the store. That rebuild reads the
/// finished rollouts' rows and never a stored plan (migration 0014): its time
/// per rollout must not grow with the store, and must stay small — it used to
/// decode every plan, 14 s at 100,000 rollouts in a release build.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_or_an_old_rollouts_resolve_rebuilds_the_metrics_without_reading_plans(
) -> Result<()> {
    let (small_stack, _, small_rollouts, small_us) = restarted_over("1000", |_| Ok(())).await?;
    drop(small_stack);
    // One old rollout in doubt, as a controller crash would leave it (the
    // fill records only settled rollouts): it counts as failed until an
    // operator resolves it.
    let (stack, port, large_rollouts, large_us) = restarted_over("10000", |store| {
        let changed = store.execute(
            "UPDATE rollouts SET state = 'unknown', exit_code = 2 WHERE id = 'r-fill-10'",
            [],
        )?;
        ensure!(changed == 1, "no rollout r-fill-10");
        Ok(())
    })
    .await?;
    let (text, first_scrape_us) = scrape(port).await?;
    let successes = "pgrollout_deployment_successes_total{kind=\"batch\",environment=\"dev\"}";
    assert_eq!(sample(&text, successes), Some(9_999.0), "{text}");

    let mark = stack.controller.mark();
    let out = stack
        .cli(&[
            "resolve",
            "r-fill-10",
            "--succeeded",
            "--reason",
            "ledger checked",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let (text, resolve_scrape_us) = scrape(port).await?;
    let (_, resolve_us) = summary_built(&stack, Some(mark)).await?;
    assert_eq!(sample(&text, successes), Some(10_000.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "pgrollout_rollouts{kind=\"deploy\",state=\"succeeded\"}"
        ),
        Some(10_000.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pgrollout_rollouts{kind=\"deploy\",state=\"unknown\"}"
        ),
        None,
        "{text}"
    );

    let per_rollout = |us: u64, rollouts: u64| us as f64 / rollouts.max(1) as f64;
    let (small, large, resolve) = (
        per_rollout(small_us, small_rollouts),
        per_rollout(large_us, large_rollouts),
        per_rollout(resolve_us, large_rollouts),
    );
    eprintln!(
        "summary rebuilt after a restart: {small_us} µs for {small_rollouts} rollouts ({small:.1} µs each), \
         {large_us} µs for {large_rollouts} ({large:.1} µs each); after the resolve: {resolve_us} µs \
         ({resolve:.1} µs each); scrapes: {first_scrape_us} µs after the restart, {resolve_scrape_us} µs after the resolve"
    );
    // A floor of 50 ms keeps a busy machine's scheduling from reading as
    // growth on the small store.
    assert!(
        large_us <= 3 * small_us.max(50_000) * large_rollouts / small_rollouts.max(1),
        "the rebuild's time per rollout grew with the store: {small:.1} µs with {small_rollouts}, \
         {large:.1} µs with {large_rollouts}"
    );
    for (what, each) in [("restart", large), ("resolve", resolve)] {
        assert!(
            each <= MAX_REBUILD_US_PER_ROLLOUT,
            "the rebuild after a {what} took {each:.1} µs per rollout (at most {MAX_REBUILD_US_PER_ROLLOUT})"
        );
    }
    Ok(())
}

/// A debug build's rebuild per finished rollout, with a margin for a busy
/// machine: reading the rows cost 7–16 µs a rollout here (1,000 and 10,000
/// rollouts). A coarse guard only: with these 4-routine plans, decoding
/// every plan as before migration 0014 cost 22–23 µs, which it does not
/// catch; the plans of 1,000-routine batches made that 14 s at 100,000
/// rollouts in a release build (deploy/bench/README.md).
/// `metrics::summary_tests::an_old_rollouts_resolve_rebuilds_from_the_rows_without_reading_a_plan`
/// shows that no plan is read.
const MAX_REBUILD_US_PER_ROLLOUT: f64 = 60.0;
