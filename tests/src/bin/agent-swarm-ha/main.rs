//! The scale benchmark of issue 18: 1,000 agent connections across three
//! controllers (the real binary, three processes) on one PostgreSQL store,
//! one real agent with a real database in each of the zones dev, qa and
//! prod. Every agent lists the three controllers, rotated so about a third
//! start on each. It measures:
//!
//! - the dispatch latency of real `pgrollout deploy`s to the three zones
//!   (CLI start → the zone's agent logs `job started`), before and after
//!   one controller is killed with SIGKILL in the middle of a round;
//! - the time from that `kill -9` until every agent is connected again;
//! - the store's load: PostgreSQL's CPU (postmaster and backends),
//!   `pg_stat_database.xact_commit` per second and its connections, idle,
//!   while deploying and around the kill.
//!
//! Run it with `deploy/bench/agents-1000-ha.sh` (release build).
//!
//! Deploys go through the controller holding the zone's agent stream
//! (`--through holder`, the default): on `main` a controller delivers a job
//! only to agents connected to itself. `--through any` sends each deploy
//! through the live controllers in turn, for when delivery through the
//! controller holding the stream has landed (issue 18, item 2).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pgrollout_tests::stack::OPERATOR;
use pgrollout_tests::{CommandOutput, PgCluster, Process, Stack, StackOptions};

mod load;
mod swarm;

use load::{measure_window, postmaster_pid, sample_store};
use swarm::{issue_certificates, Swarm};

/// The zones with a real agent and database; each is also an environment.
const ZONES: [&str; 3] = ["dev", "qa", "prod"];
/// The zone of the scripted agents: no deploy goes there, they are load.
const SWARM_ZONE: &str = "swarm";
/// How long one load window is sampled.
const WINDOW: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq)]
enum Through {
    /// The controller the zone's agent is connected to.
    Holder,
    /// Each live controller in turn (needs delivery across controllers).
    Any,
}

struct Options {
    agents: usize,
    rounds: usize,
    through: Through,
}

fn options() -> Result<Options> {
    let usage = "usage: agent-swarm-ha [AGENTS=1000] [ROUNDS=10] [--through holder|any]";
    let mut positional = Vec::new();
    let mut through = Through::Holder;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--through" {
            through = match args.next().as_deref() {
                Some("holder") => Through::Holder,
                Some("any") => Through::Any,
                other => bail!("--through takes holder or any, not {other:?}; {usage}"),
            };
        } else {
            positional.push(arg.parse::<usize>().with_context(|| usage.to_owned())?);
        }
    }
    Ok(Options {
        agents: positional.first().copied().unwrap_or(1000),
        rounds: positional.get(1).copied().unwrap_or(10),
        through,
    })
}

/// One controller process of the three.
struct Controller {
    name: &'static str,
    /// `https://127.0.0.1:<port>` of its operators' listener.
    operators: String,
    /// `https://127.0.0.1:<port>` of its agents' listener.
    agents: String,
    alive: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = options()?;
    let store = PgCluster::start("store").await?;
    // The harness's clusters run with fsync off; a store runs with it on.
    let admin = store.connect().await?;
    admin.simple_query("ALTER SYSTEM SET fsync = on").await?;
    admin.simple_query("SELECT pg_reload_conf()").await?;
    drop(admin);
    let mut stack = Stack::start_with(StackOptions {
        zones: ZONES.iter().map(|z| z.to_string()).collect(),
        start_agents: false,
        store_url: Some(store.url()),
        controller_extra: format!("[environments.{SWARM_ZONE}]\nzone = \"{SWARM_ZONE}\"\n"),
        ..StackOptions::default()
    })
    .await?;
    let mut controllers = vec![Controller {
        name: "a",
        operators: stack.operators.clone(),
        agents: stack.agents_address.clone(),
        alive: true,
    }];
    let mut others: Vec<Process> = Vec::new();
    for name in ["b", "c"] {
        let other = stack.other_controller(name)?;
        others.push(
            stack
                .spawn_controller(&other, &format!("controller-{name}"))
                .await?,
        );
        controllers.push(Controller {
            name,
            operators: other.operators,
            agents: other.agents,
            alive: true,
        });
    }
    let pids: Vec<u32> = std::iter::once(stack.controller.pid())
        .chain(others.iter().map(Process::pid))
        .collect();

    // Each real agent starts on its own controller: dev on a, qa on b, prod on c.
    for (index, zone) in ZONES.iter().enumerate() {
        let list = rotated(&controllers, index);
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        stack.list_controllers(zone, &list)?;
        stack.spawn_agent(zone)?;
        stack
            .agent(zone)?
            .wait_for_line("connected to controller", WAIT)
            .await?;
    }
    // The operator's certificate, issued on the first CLI call.
    let out = stack.cli(&["agents"]).await?;
    ensure!(out.code == 0, "pgrollout agents: {out}");

    println!(
        "3 controllers (pids {pids:?}) on one PostgreSQL store; issuing {} agent certificates…",
        options.agents
    );
    issue_certificates(&stack, options.agents).await?;
    let swarm = Swarm::connect(&stack, &controllers, options.agents).await?;

    let monitor = store.connect().await?;
    let postmaster = postmaster_pid(&store)?;
    let idle = measure_window(&monitor, postmaster, &pids, WINDOW).await?;
    println!("idle, {} agents + 3:        {idle}", options.agents);

    // addarc's smoke test calls reconcilemupstream: deploy that first.
    for (index, zone) in ZONES.iter().enumerate() {
        let address = route(&stack, &controllers, options.through, 0, index)?;
        let out = deploy_through(&stack, &address, "reconcilemupstream", zone).await?;
        ensure!(
            out.code == 0,
            "deploying reconcilemupstream to {zone}: {out}"
        );
    }

    let before = sample_store(&monitor, postmaster, &pids).await?;
    let mut early = Latencies::default();
    deploy_phase(&stack, &controllers, &options, &mut early).await?;
    let deploying = before.until(&sample_store(&monitor, postmaster, &pids).await?, &pids);
    println!("deploying ({} rounds):     {deploying}", early.rounds);
    println!("before the kill: {}", early.summary());

    // The kill: a round of deploys starts; once dev's job is running on its
    // agent, the controller holding that agent is killed with SIGKILL.
    let victim = holder(&stack, &controllers, "dev")?;
    ensure!(
        victim == 0,
        "dev's agent is on controller {victim}, expected a"
    );
    let before_kill = sample_store(&monitor, postmaster, &pids).await?;
    let dev_mark = stack.agent("dev")?.mark();
    let (kill_round, killed) = tokio::join!(
        launch_round(&stack, &controllers, options.through, options.rounds),
        async {
            stack
                .agent("dev")?
                .wait_for_line_after(dev_mark, "job started", WAIT)
                .await?;
            let pid = pids[0];
            // SIGKILL by pid, as `kill -9` does (the deploys in flight hold
            // the stack); the process is reaped below.
            let status = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()?;
            ensure!(status.success(), "kill -9 {pid} failed");
            anyhow::Ok(Instant::now())
        }
    );
    let killed_at = killed?;
    stack.kill_9_controller().await?;
    controllers[0].alive = false;

    // Every agent connected again: the swarm's count back to full and the
    // real dev agent welcomed by another controller.
    stack
        .agent("dev")?
        .wait_for_line_after(dev_mark, "connected to controller", WAIT)
        .await?;
    let dev_back = killed_at.elapsed();
    let swarm_back = swarm.all_connected_since(killed_at, WAIT).await?;
    let all_back = dev_back.max(swarm_back);
    let live_pids = &pids[1..];
    tokio::time::sleep(WINDOW.saturating_sub(killed_at.elapsed())).await;
    let failover = before_kill.until(&sample_store(&monitor, postmaster, &pids).await?, live_pids);

    println!(
        "kill -9 controller a ({} swarm agents and dev's agent on it): every agent connected again {:.0} ms after the kill \
         (the swarm's last {:.0} ms, dev's agent {:.0} ms; dropped and reconnected: {} swarm agents)",
        swarm.on_first(0),
        all_back.as_secs_f64() * 1000.0,
        swarm_back.as_secs_f64() * 1000.0,
        dev_back.as_secs_f64() * 1000.0,
        swarm.reconnections()
    );
    for (zone, outcome) in ZONES.iter().zip(&kill_round) {
        println!(
            "  the round in flight at the kill, {zone}: {}",
            outcome.describe()
        );
    }
    println!("kill → 15 s after:         {failover}");
    if let Some(Ok(out)) = kill_round.first().map(|o| &o.cli) {
        if let Ok(rollout) = out.rollout_id() {
            let row = monitor
                .query_one(
                    "SELECT r.state, (SELECT string_agg(j.state, ',') FROM jobs j WHERE j.rollout_id = r.id), \
                            (SELECT count(*) FROM audit_log a WHERE a.rollout_id = r.id AND a.action = 'job.interrupted') \
                       FROM rollouts r WHERE r.id = $1",
                    &[&rollout],
                )
                .await?;
            let (state, jobs, interrupted): (String, Option<String>, i64) =
                (row.get(0), row.get(1), row.get(2));
            println!(
                "  dev's rollout in flight at the kill ({rollout}), 15 s after, in the store: rollout {state}, job {}, job.interrupted audited {interrupted}×",
                jobs.unwrap_or_default()
            );
        }
    }
    for controller in controllers.iter().filter(|c| c.alive) {
        let listed = agents_listed(&stack, &controller.operators).await?;
        println!("  controller {} lists {listed} agents", controller.name);
    }

    let before = sample_store(&monitor, postmaster, &pids).await?;
    let mut late = Latencies::default();
    deploy_phase(&stack, &controllers, &options, &mut late).await?;
    let deploying = before.until(&sample_store(&monitor, postmaster, &pids).await?, live_pids);
    println!(
        "deploying after the kill ({} rounds): {deploying}",
        late.rounds
    );
    println!("after the kill:  {}", late.summary());
    println!("dispatch = CLI start → `job started` at the zone's agent; wall = the CLI's whole run (release build)");
    swarm.stop();
    Ok(())
}

/// The controllers' agent addresses starting at `first`.
fn rotated(controllers: &[Controller], first: usize) -> Vec<String> {
    (0..controllers.len())
        .map(|i| controllers[(first + i) % controllers.len()].agents.clone())
        .collect()
}

/// The index of the controller the zone's real agent last connected to.
fn holder(stack: &Stack, controllers: &[Controller], zone: &str) -> Result<usize> {
    let output = stack.agent(zone)?.output_so_far();
    let line = output
        .lines()
        .rfind(|l| l.contains("connected to controller"))
        .context("the agent never connected")?;
    let address = line
        .split("controller=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no controller= in {line:?}"))?;
    controllers
        .iter()
        .position(|c| c.agents == address)
        .with_context(|| format!("{address} is none of the controllers"))
}

/// The operators' address a deploy to `zone` goes through in `round`.
fn route(
    stack: &Stack,
    controllers: &[Controller],
    through: Through,
    round: usize,
    zone_index: usize,
) -> Result<String> {
    match through {
        Through::Holder => Ok(controllers[holder(stack, controllers, ZONES[zone_index])?]
            .operators
            .clone()),
        Through::Any => {
            let live: Vec<&Controller> = controllers.iter().filter(|c| c.alive).collect();
            Ok(live[(round + zone_index) % live.len()].operators.clone())
        }
    }
}

/// What one deploy did.
struct Outcome {
    /// CLI start → `job started` at the agent, when it started.
    dispatch: Option<Duration>,
    wall: Duration,
    cli: Result<CommandOutput>,
}

impl Outcome {
    fn describe(&self) -> String {
        let dispatch = self.dispatch.map_or("no job started".into(), |d| {
            format!("dispatched in {:.1} ms", d.as_secs_f64() * 1000.0)
        });
        match &self.cli {
            Ok(out) => format!(
                "{dispatch}; CLI exit {} after {:.0} ms{}",
                out.code,
                self.wall.as_secs_f64() * 1000.0,
                out.stderr
                    .lines()
                    .last()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("{dispatch}; CLI did not run: {e:#}"),
        }
    }
}

/// Deploys `addarc` to every zone at once, each through its route.
async fn launch_round(
    stack: &Stack,
    controllers: &[Controller],
    through: Through,
    round: usize,
) -> Vec<Outcome> {
    let deploys = ZONES.iter().enumerate().map(|(index, zone)| async move {
        let start = Instant::now();
        let address = match route(stack, controllers, through, round, index) {
            Ok(address) => address,
            Err(e) => {
                return Outcome {
                    dispatch: None,
                    wall: start.elapsed(),
                    cli: Err(e),
                }
            }
        };
        let agent = match stack.agent(zone) {
            Ok(agent) => agent,
            Err(e) => {
                return Outcome {
                    dispatch: None,
                    wall: start.elapsed(),
                    cli: Err(e),
                }
            }
        };
        let mark = agent.mark();
        let started = async {
            agent
                .wait_for_line_after(mark, "job started", WAIT)
                .await
                .ok()
                .map(|_| start.elapsed())
        };
        let cli = async {
            let out = deploy_through(stack, &address, "addarc", zone).await;
            (out, start.elapsed())
        };
        let (dispatch, (cli, wall)) = tokio::join!(started, cli);
        Outcome {
            dispatch,
            wall,
            cli,
        }
    });
    join_all(deploys).await
}

/// Runs the futures concurrently on this task, keeping their order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut results: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in set.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *result = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Rounds of deploys until `rounds` are done and the phase has lasted a
/// load window (the store's commit counter is flushed about once a second).
async fn deploy_phase(
    stack: &Stack,
    controllers: &[Controller],
    options: &Options,
    latencies: &mut Latencies,
) -> Result<()> {
    let started = Instant::now();
    while latencies.rounds < options.rounds || started.elapsed() < WINDOW {
        deploy_round(
            stack,
            controllers,
            options.through,
            latencies.rounds,
            latencies,
        )
        .await?;
        latencies.rounds += 1;
    }
    Ok(())
}

/// One round; the latencies of its successful deploys are kept, a failed
/// one is counted and its first message kept for the report.
async fn deploy_round(
    stack: &Stack,
    controllers: &[Controller],
    through: Through,
    round: usize,
    latencies: &mut Latencies,
) -> Result<()> {
    for (zone, outcome) in ZONES
        .iter()
        .zip(launch_round(stack, controllers, through, round).await)
    {
        let succeeded = matches!(&outcome.cli, Ok(out) if out.code == 0);
        match (succeeded, outcome.dispatch) {
            (true, Some(dispatch)) => {
                latencies.dispatch.push(dispatch);
                latencies.wall.push(outcome.wall);
            }
            _ => {
                latencies.failed += 1;
                if latencies.first_failure.is_none() {
                    latencies.first_failure =
                        Some(format!("{zone}, round {round}: {}", outcome.describe()));
                }
            }
        }
    }
    Ok(())
}

/// `pgrollout deploy addarc <zone>` against the controller at `address`.
async fn deploy_through(
    stack: &Stack,
    address: &str,
    routine: &str,
    zone: &str,
) -> Result<CommandOutput> {
    let ca = stack.ca_dir.join("ca.pem");
    let cert = stack.ca_dir.join(format!("operator-{OPERATOR}.pem"));
    let key = stack.ca_dir.join(format!("operator-{OPERATOR}.key"));
    let project = stack.project.to_string_lossy().to_string();
    let (ca, cert, key) = (
        ca.to_string_lossy().to_string(),
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );
    stack
        .bins
        .run_cli(
            ["deploy", routine, zone, "--project", &project],
            &[
                ("PGROLLOUT_ADDR", address),
                ("PGROLLOUT_ACTOR", OPERATOR),
                ("PGROLLOUT_CA", &ca),
                ("PGROLLOUT_CERT", &cert),
                ("PGROLLOUT_KEY", &key),
            ],
        )
        .await
}

/// How many agents `pgrollout agents` lists through the controller at `address`.
async fn agents_listed(stack: &Stack, address: &str) -> Result<usize> {
    let ca = stack.ca_dir.join("ca.pem").to_string_lossy().to_string();
    let cert = stack.ca_dir.join(format!("operator-{OPERATOR}.pem"));
    let key = stack.ca_dir.join(format!("operator-{OPERATOR}.key"));
    let out = stack
        .bins
        .run_cli(
            ["agents", "--output", "json"],
            &[
                ("PGROLLOUT_ADDR", address),
                ("PGROLLOUT_CA", &ca),
                ("PGROLLOUT_CERT", &cert.to_string_lossy()),
                ("PGROLLOUT_KEY", &key.to_string_lossy()),
            ],
        )
        .await?;
    ensure!(out.code == 0, "pgrollout agents through {address}: {out}");
    let listed: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(listed.as_array().map_or(0, Vec::len))
}

#[derive(Default)]
struct Latencies {
    dispatch: Vec<Duration>,
    wall: Vec<Duration>,
    failed: usize,
    first_failure: Option<String>,
    rounds: usize,
}

impl Latencies {
    fn summary(&mut self) -> String {
        let failed = match &self.first_failure {
            None => String::new(),
            Some(first) => format!("; {} failed, the first: {first}", self.failed),
        };
        format!(
            "{} deploys succeeded, dispatch p50 {:.1} ms p95 {:.1} ms; CLI wall p50 {:.0} ms p95 {:.0} ms{failed}",
            self.dispatch.len(),
            percentile(&mut self.dispatch, 50),
            percentile(&mut self.dispatch, 95),
            percentile(&mut self.wall, 50),
            percentile(&mut self.wall, 95),
        )
    }
}

fn percentile(values: &mut [Duration], p: usize) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort();
    let index = ((values.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(values.len() - 1);
    values[index].as_secs_f64() * 1000.0
}
