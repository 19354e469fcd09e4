//! The scripted agents: each with its own certificate and mutual-TLS
//! connection, listing the three controllers rotated by its index, and
//! moving to the next one when its stream drops the way the real agent
//! does (one jittered 0.5–1 s delay, then the next address; a whole round
//! refused costs one jittered backoff) — `agent/src/link/rotation.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{agent_message::Body, AgentMessage, Heartbeat};
use pgrollout_tests::scripted_agent::{channel, ScriptedAgent};
use pgrollout_tests::Stack;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{rotated, Controller, SWARM_ZONE};

/// How many agents dial at once while the swarm first connects.
const CONNECTING_AT_ONCE: usize = 32;

/// What the agents' tasks report.
#[derive(Default)]
struct State {
    connected: AtomicUsize,
    drops: AtomicUsize,
    reconnections: AtomicUsize,
    last_reconnect: Mutex<Option<Instant>>,
}

pub struct Swarm {
    state: Arc<State>,
    total: usize,
    /// How many agents listed each controller first.
    first: Vec<usize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Swarm {
    /// Starts `agents` scripted agents and returns once all are welcomed.
    pub async fn connect(
        stack: &Stack,
        controllers: &[Controller],
        agents: usize,
    ) -> Result<Swarm> {
        let state = Arc::new(State::default());
        let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
        let started = Instant::now();
        let mut tasks = Vec::new();
        let mut first = vec![0; controllers.len()];
        for index in 0..agents {
            let start = index % controllers.len();
            first[start] += 1;
            let name = format!("swarm-{index}");
            let files = stack.ca_dir.clone();
            let identity = Identity {
                name: name.clone(),
                ca: files.join("ca.pem"),
                cert: files.join(format!("agent-{SWARM_ZONE}-{name}.pem")),
                key: files.join(format!("agent-{SWARM_ZONE}-{name}.key")),
            };
            let permit = gate.clone().acquire_owned().await?;
            tasks.push(tokio::spawn(run_agent(
                identity,
                rotated(controllers, start),
                state.clone(),
                permit,
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while state.connected.load(Ordering::SeqCst) < agents {
            ensure!(
                Instant::now() < deadline,
                "only {} of {agents} agents connected",
                state.connected.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        println!(
            "{agents} agents connected in {:.1}s ({first:?} starting on a, b, c)",
            took.as_secs_f64()
        );
        Ok(Swarm {
            state,
            total: agents,
            first,
            tasks,
        })
    }

    /// How many agents started on controller `index`.
    pub fn on_first(&self, index: usize) -> usize {
        self.first[index]
    }

    /// How many times an agent connected again after its stream dropped.
    pub fn reconnections(&self) -> usize {
        self.state.reconnections.load(Ordering::SeqCst)
    }

    /// Waits until the agents that were on the killed controller (the
    /// first's) have all dropped and every agent is connected again;
    /// returns the time from `killed_at` to the last reconnection.
    pub async fn all_connected_since(
        &self,
        killed_at: Instant,
        timeout: Duration,
    ) -> Result<Duration> {
        let expected_drops = self.first[0];
        let deadline = Instant::now() + timeout;
        loop {
            let drops = self.state.drops.load(Ordering::SeqCst);
            let connected = self.state.connected.load(Ordering::SeqCst);
            if drops >= expected_drops && connected == self.total {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{connected} of {} agents connected, {drops} dropped, {timeout:?} after the kill",
                self.total
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last = self
            .state
            .last_reconnect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .context("no agent reconnected")?;
        Ok(last.saturating_duration_since(killed_at))
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

struct Identity {
    name: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// One agent for the whole run: dial, hold the stream, move on when it drops.
async fn run_agent(
    identity: Identity,
    addresses: Vec<String>,
    state: Arc<State>,
    permit: OwnedSemaphorePermit,
) {
    let mut permit = Some(permit);
    let mut cursor = 0;
    let mut welcomed_before = false;
    loop {
        let mut refused = 0;
        let agent = loop {
            match dial(&identity, &addresses[cursor]).await {
                Ok(agent) => break agent,
                Err(_) => {
                    cursor = (cursor + 1) % addresses.len();
                    refused += 1;
                    if refused % addresses.len() == 0 {
                        tokio::time::sleep(jittered(Duration::from_secs(1))).await;
                    }
                }
            }
        };
        drop(permit.take());
        state.connected.fetch_add(1, Ordering::SeqCst);
        if welcomed_before {
            *state
                .last_reconnect
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            state.reconnections.fetch_add(1, Ordering::SeqCst);
        }
        welcomed_before = true;
        hold(agent).await;
        state.connected.fetch_sub(1, Ordering::SeqCst);
        state.drops.fetch_add(1, Ordering::SeqCst);
        cursor = (cursor + 1) % addresses.len();
        tokio::time::sleep(jittered(Duration::from_secs(1))).await;
    }
}

async fn dial(identity: &Identity, address: &str) -> Result<ScriptedAgent> {
    let link = channel(address, &identity.ca, &identity.cert, &identity.key).await?;
    ScriptedAgent::connect(link, &identity.name, SWARM_ZONE).await
}

/// Heartbeats every 5 s (the agent's default) and reads until the stream ends.
async fn hold(agent: ScriptedAgent) {
    let (outbound, mut inbound) = agent.split();
    let heartbeat = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            let beat = Body::Heartbeat(Heartbeat {
                sent_at_unix_ms: now_unix_ms(),
            });
            if outbound.send(AgentMessage { body: Some(beat) }).is_err() {
                return;
            }
        }
    });
    while let Ok(Some(_)) = inbound.message().await {}
    heartbeat.abort();
}

/// Half to all of `bound`, as the agent's `rotation::jittered`.
fn jittered(bound: Duration) -> Duration {
    bound.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// The swarm's certificates, issued with the real `pgrollout ca issue`.
pub async fn issue_certificates(stack: &Stack, agents: usize) -> Result<()> {
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
                        "ca", "issue", "agent", "--dir", &dir, "--zone", SWARM_ZONE, "--name",
                        &name,
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
