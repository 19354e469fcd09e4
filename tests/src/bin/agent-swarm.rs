//! The scale benchmark of issue 8: N agent connections (default 1,000), each
//! with its own real certificate from the built-in CA and its own mutual-TLS
//! connection, heartbeating against one controller (the real binary). It
//! reports the controller's CPU and RSS while they idle, and the dispatch
//! latency of a real `pgrollout deploy` to one of them: from starting the
//! CLI to the offer arriving at the agent, and the CLI's whole wall time.
//!
//! Run it with `deploy/bench/agents-1000.sh` (release build).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{
    agent_message::Body, controller_message, Accept, AgentMessage, Heartbeat, JobResult, Outcome,
};
use pgrollout_tests::scripted_agent::{channel, ScriptedAgent};
use pgrollout_tests::{Stack, StackOptions};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<()> {
    let agents: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("usage: agent-swarm [AGENTS] [DEPLOYS]")?
        .unwrap_or(1000);
    let deploys: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20);
    let stack = Stack::start_with(StackOptions {
        zones: vec!["prod".into()],
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    let pid = stack.controller.pid();
    println!("controller pid {pid}; issuing {agents} agent certificates…");
    issue_certificates(&stack, agents).await?;
    let baseline = sample(pid)?;

    let (offers_tx, mut offers) = mpsc::unbounded_channel::<(usize, Instant)>();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..agents {
        let name = format!("swarm-{i}");
        let ca = stack.ca_dir.clone();
        let link = channel(
            &stack.agents_address,
            &ca.join("ca.pem"),
            &ca.join(format!("agent-prod-{name}.pem")),
            &ca.join(format!("agent-prod-{name}.key")),
        )
        .await
        .with_context(|| format!("agent {i}"))?;
        let agent = ScriptedAgent::connect(link, &name, "prod").await?;
        tasks.push(tokio::spawn(run_agent(i, agent, offers_tx.clone())));
    }
    let connect_time = started.elapsed();
    let listed = stack.cli(&["agents"]).await?;
    let connected = listed.stdout.matches("swarm-").count();
    ensure!(
        connected == agents,
        "controller lists {connected} of {agents} agents"
    );
    println!(
        "{agents} agents connected in {:.1}s ({:.1} ms each, sequential TLS handshakes)",
        connect_time.as_secs_f64(),
        connect_time.as_secs_f64() * 1000.0 / agents as f64
    );

    // Idle: heartbeats both ways (controller every 1 s, agents every 5 s).
    let window = Duration::from_secs(30);
    let before = sample(pid)?;
    tokio::time::sleep(window).await;
    let after = sample(pid)?;
    let cpu =
        (after.cpu_ticks - before.cpu_ticks) as f64 / ticks_per_second() / window.as_secs_f64();
    println!(
        "controller idle with {agents} agents: CPU {:.1}% of one core over {}s; RSS {:.1} MiB (before the agents: {:.1} MiB)",
        cpu * 100.0,
        window.as_secs(),
        after.rss_kib as f64 / 1024.0,
        baseline.rss_kib as f64 / 1024.0
    );

    let mut dispatch = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..deploys {
        let start = Instant::now();
        let out = stack.cli(&["deploy", "addarc", "prod"]).await?;
        wall.push(start.elapsed());
        ensure!(out.code == 0, "deploy through the swarm: {out}");
        let (agent, at) = offers.recv().await.context("no offer arrived")?;
        ensure!(agent < agents, "offer to an unknown agent");
        dispatch.push(at.duration_since(start));
    }
    let peak = sample(pid)?;
    println!(
        "dispatch to one of {agents} agents over {deploys} deploys: CLI start → offer at the agent p50 {:.1} ms, p95 {:.1} ms; \
         CLI wall time p50 {:.1} ms, p95 {:.1} ms; controller RSS after {:.1} MiB",
        percentile(&mut dispatch, 50),
        percentile(&mut dispatch, 95),
        percentile(&mut wall, 50),
        percentile(&mut wall, 95),
        peak.rss_kib as f64 / 1024.0
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Answers every offer at once with a successful result and heartbeats every 5 s.
async fn run_agent(
    index: usize,
    agent: ScriptedAgent,
    offers: mpsc::UnboundedSender<(usize, Instant)>,
) {
    let (outbound, mut inbound) = agent.split();
    let beats = outbound.clone();
    let heartbeat = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            let beat = Body::Heartbeat(Heartbeat {
                sent_at_unix_ms: now_unix_ms(),
            });
            if beats.send(AgentMessage { body: Some(beat) }).is_err() {
                return;
            }
        }
    });
    while let Ok(Some(message)) = inbound.message().await {
        let Some(controller_message::Body::Offer(offer)) = message.body else {
            continue;
        };
        let _ = offers.send((index, Instant::now()));
        let send = |body| {
            let _ = outbound.send(AgentMessage { body: Some(body) });
        };
        send(Body::Accept(Accept {
            job_id: offer.job_id.clone(),
            attempt: offer.attempt,
        }));
        send(Body::Result(JobResult {
            job_id: offer.job_id,
            attempt: offer.attempt,
            seq: 1,
            outcome: Outcome::Succeeded as i32,
            message: "swarm agent: nothing applied".into(),
            ..Default::default()
        }));
    }
    heartbeat.abort();
}

async fn issue_certificates(stack: &Stack, agents: usize) -> Result<()> {
    let dir = stack.ca_dir.to_string_lossy().to_string();
    let bins = Arc::new(stack.bins.clone());
    let mut pending = Vec::new();
    for i in 0..agents {
        let (bins, dir) = (bins.clone(), dir.clone());
        pending.push(tokio::spawn(async move {
            let name = format!("swarm-{i}");
            let out = bins
                .run_cli(
                    [
                        "ca", "issue", "agent", "--dir", &dir, "--zone", "prod", "--name", &name,
                    ],
                    &[],
                )
                .await?;
            ensure!(out.code == 0, "issuing {name}: {out}");
            anyhow::Ok(())
        }));
        if pending.len() >= 8 {
            pending.remove(0).await??;
        }
    }
    for task in pending {
        task.await??;
    }
    Ok(())
}

struct Sample {
    cpu_ticks: u64,
    rss_kib: u64,
}

fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").context("/proc stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let cpu_ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(Sample { cpu_ticks, rss_kib })
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(values: &mut [Duration], p: usize) -> f64 {
    values.sort();
    let index = ((values.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(values.len() - 1);
    values[index].as_secs_f64() * 1000.0
}
