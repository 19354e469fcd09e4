//! Issue 18, item 3: the scheduler's leader among three controllers on one
//! PostgreSQL store, as real processes. A scheduled request fires exactly
//! once — with all three up, when the leader is killed with SIGKILL just
//! before its window opens, and when the leader is frozen (SIGSTOP) past
//! its lease and then resumes: the controller that fires it holds the
//! scheduler's lease, under a fencing token that grew with each takeover,
//! and an ex-leader does not act.
//!
//! Job delivery across controllers is not what is tested here: each
//! controller has a dev agent of its own (same identity, own journal), so
//! whichever leads finds an agent of the zone.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pgrollout_tests::http_get::http_request;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{free_port, window_from_now, PgCluster, Process, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);
/// Long enough for a window that opens up to two and a half minutes from now.
const UNTIL_FIRED: Duration = Duration::from_secs(210);

/// One controller of the three and the dev agent that reaches only it.
struct Member {
    /// `host/127.0.0.1:<operators port>`'s tail, as the store names it.
    id_suffix: String,
    /// Its `/metrics` listener.
    metrics: u16,
    controller: Option<Process>,
    _agent: Option<Process>,
}

/// Three controllers on one store; A is the stack's own.
struct Trio {
    stack: Stack,
    store: PgCluster,
    client: Client,
    /// B and C (A is `stack.controller`, its agent the stack's).
    others: Vec<Member>,
    request: String,
    /// A's `/metrics` listener.
    a_metrics: u16,
}

/// A window that opens 90–150 s from now (a whole minute of the clock),
/// long enough to start three controllers and lose a leader before it.
fn window_opening_soon() -> Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let to_next_minute = 60 - now.as_secs() % 60;
    let start = if to_next_minute >= 30 { 2 } else { 3 };
    window_from_now(start, 10)
}

/// The operators' port at the end of an address.
fn port_of(address: &str) -> String {
    address.rsplit(':').next().unwrap_or_default().to_owned()
}

/// A on a fresh PostgreSQL store with a request scheduled for a window
/// about to open, then B and C beside it, each with its own agent.
async fn trio() -> Result<Trio> {
    let store = PgCluster::start("store").await?;
    let window = window_opening_soon()?;
    let a_metrics = free_port();
    let stack = Stack::start_with(StackOptions {
        store_url: Some(store.url()),
        controller_extra: format!("[metrics]\nlisten = \"127.0.0.1:{a_metrics}\"\n"),
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{window}\""))],
        ..StackOptions::default()
    })
    .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    ensure!(out.code == 0, "{out}");
    let request = out.request_id()?;
    ensure!(out.stdout.contains("scheduled: request"), "{out}");
    let mut others = Vec::new();
    for name in ["b", "c"] {
        let other = stack.other_controller(name)?;
        // Its own metrics listener.
        let metrics = free_port();
        let config = std::fs::read_to_string(&other.config)?;
        let a_listen = format!("listen = \"127.0.0.1:{a_metrics}\"");
        ensure!(config.contains(&a_listen), "{config}");
        std::fs::write(
            &other.config,
            config.replace(&a_listen, &format!("listen = \"127.0.0.1:{metrics}\"")),
        )?;
        let controller = stack.spawn_controller(&other, name).await?;
        let agent = stack.spawn_agent_for(&other, name).await?;
        others.push(Member {
            id_suffix: format!(":{}", port_of(&other.operators)),
            metrics,
            controller: Some(controller),
            _agent: Some(agent),
        });
    }
    let client = store.connect().await?;
    Ok(Trio {
        stack,
        store,
        client,
        others,
        request,
        a_metrics,
    })
}

impl Trio {
    fn a_suffix(&self) -> String {
        format!(":{}", port_of(&self.stack.operators))
    }

    /// The scheduler lease's holder and token, as psql reads them.
    async fn scheduler_lease(&self) -> Result<(String, i64)> {
        let row = self
            .client
            .query_one(
                "SELECT holder, token FROM leases WHERE name = 'scheduler'",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Waits until some controller holds the scheduler's lease under a
    /// token above `above`; returns holder and token.
    async fn lease_taken(&self, above: i64) -> Result<(String, i64)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok((holder, token)) = self.scheduler_lease().await {
                if token > above {
                    return Ok((holder, token));
                }
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "nobody took the scheduler's lease over token {above}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the request has fired and its rollout finished; returns
    /// the controller that started it.
    async fn fired(&self) -> Result<String> {
        let deadline = tokio::time::Instant::now() + UNTIL_FIRED;
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT p.state, p.started_by, r.state, r.message FROM pending_rollouts p
                     LEFT JOIN rollouts r ON r.id = p.rollout_id WHERE p.request_id = $1",
                    &[&self.request],
                )
                .await?;
            let (state, starter, rollout): (String, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            let message: Option<String> = row.get(3);
            if state == "started" && rollout.as_deref().is_some_and(|r| r != "running") {
                ensure!(
                    rollout.as_deref() == Some("succeeded"),
                    "the fired rollout ended {rollout:?}: {message:?}"
                );
                return starter.context("a started request names its starter");
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "request {} did not fire: {state} {rollout:?}\n{}",
                self.request,
                self.stack.all_process_output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What a user checks: the request became one rollout, the target's
    /// ledger has it once, and `rollout.fired` was audited once.
    async fn fired_exactly_once(&self) -> Result<()> {
        let trace: String = self
            .client
            .query_one(
                "SELECT trace_id FROM pending_rollouts WHERE request_id = $1",
                &[&self.request],
            )
            .await?
            .get(0);
        let rollouts: Vec<String> = self
            .client
            .query(
                "SELECT id FROM rollouts WHERE trace_id = $1 AND kind = 'deploy'",
                &[&trace],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(rollouts.len(), 1, "one rollout: {rollouts:?}");
        let fired: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM audit_log WHERE action = 'rollout.fired' AND rollout_id = $1",
                &[&self.request],
            )
            .await?
            .get(0);
        assert_eq!(fired, 1, "rollout.fired audited once");
        let ledger: i64 = self
            .stack
            .zone("dev")
            .pg
            .connect()
            .await?
            .query_one(
                "SELECT count(*) FROM pgrollout.ledger WHERE rollout_id = $1",
                &[&rollouts[0]],
            )
            .await?
            .get(0);
        assert_eq!(ledger, 1, "the ledger has the deploy once");
        Ok(())
    }

    /// `leader.acquired` entries naming the scheduler, oldest first.
    async fn scheduler_takeovers(&self) -> Result<Vec<String>> {
        Ok(self
            .client
            .query(
                "SELECT details FROM audit_log WHERE action = 'leader.acquired' ORDER BY seq",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .filter(|details| details.contains("scheduler (fencing token"))
            .collect())
    }
}

/// `pgrollout_controller_leader{singleton="scheduler"}` on the controller
/// whose `/metrics` listens on `port`.
async fn scheduler_leader_metric(port: u16) -> Result<String> {
    let (head, body) = http_request(port, "GET", "/metrics").await?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    let series = "pgrollout_controller_leader{singleton=\"scheduler\"} ";
    body.lines()
        .find_map(|line| line.strip_prefix(series))
        .map(str::to_owned)
        .with_context(|| format!("no {series} in:\n{body}"))
}

/// Waits until the controller on `port` reports `value` for the metric.
async fn metric_becomes(port: u16, value: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = scheduler_leader_metric(port).await?;
        if now == value {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the leader metric stays {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_scheduled_request_fires_exactly_once_with_three_controllers_up() -> Result<()> {
    let trio = trio().await?;
    // A started first and holds the scheduler's lease; B and C wait.
    let (holder, token) = trio.lease_taken(0).await?;
    assert!(holder.ends_with(&trio.a_suffix()), "{holder}");

    let starter = trio.fired().await?;
    assert_eq!(starter, holder, "the lease holder fired it");
    trio.fired_exactly_once().await?;
    assert_eq!(
        trio.scheduler_lease().await?,
        (holder, token),
        "no takeover"
    );
    assert_eq!(trio.scheduler_takeovers().await?.len(), 1);
    drop(trio.store);
    Ok(())
}

#[tokio::test]
async fn the_leader_killed_before_the_window_opens_is_replaced_and_the_request_fires_once(
) -> Result<()> {
    let mut trio = trio().await?;
    let (holder, token) = trio.lease_taken(0).await?;
    ensure!(holder.ends_with(&trio.a_suffix()), "{holder}");
    metric_becomes(trio.a_metrics, "1").await?;
    for member in &trio.others {
        assert_eq!(scheduler_leader_metric(member.metrics).await?, "0");
    }

    trio.stack.controller.kill_9()?;
    trio.stack.controller.wait_for_exit(WAIT).await?;
    let (new_holder, new_token) = trio.lease_taken(token).await?;
    assert!(
        trio.others
            .iter()
            .any(|m| new_holder.ends_with(&m.id_suffix)),
        "B or C took over: {new_holder}"
    );
    assert_eq!(
        new_token,
        token + 1,
        "the token grows with the change of holder"
    );
    for member in &trio.others {
        let leads = if new_holder.ends_with(&member.id_suffix) {
            "1"
        } else {
            "0"
        };
        metric_becomes(member.metrics, leads).await?;
    }

    let starter = trio.fired().await?;
    assert_eq!(starter, new_holder, "the new leader fired it");
    trio.fired_exactly_once().await?;
    let takeovers = trio.scheduler_takeovers().await?;
    assert_eq!(takeovers.len(), 2, "{takeovers:?}");
    assert!(
        takeovers[1].contains(&format!("scheduler (fencing token {new_token})")),
        "{takeovers:?}"
    );
    drop(trio.store);
    Ok(())
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_is_fenced_off_and_stops_acting_when_it_resumes(
) -> Result<()> {
    let mut trio = trio().await?;
    let (holder, token) = trio.lease_taken(0).await?;
    ensure!(holder.ends_with(&trio.a_suffix()), "{holder}");

    // A is frozen: it neither renews nor learns that it lost the lease.
    trio.stack.controller.signal("STOP")?;
    let (new_holder, new_token) = trio.lease_taken(token).await?;
    assert!(!new_holder.ends_with(&trio.a_suffix()), "{new_holder}");
    let starter = trio.fired().await?;
    assert_eq!(starter, new_holder, "the new leader fired it");

    // Thawed, A believes for a moment that it leads; its token is stale, it
    // sees the lease taken, and stops.
    let mark = trio.stack.controller.mark();
    trio.stack.controller.signal("CONT")?;
    trio.stack
        .controller
        .wait_for_line_after(mark, "no longer the leader", WAIT)
        .await?;
    trio.fired_exactly_once().await?;
    assert_eq!(
        trio.scheduler_lease().await?,
        (new_holder, new_token),
        "the lease stays with the new leader"
    );
    for member in &mut trio.others {
        if let Some(controller) = member.controller.as_mut() {
            ensure!(controller.exit_status()?.is_none(), "B and C still run");
        }
    }
    drop(trio.store);
    Ok(())
}
