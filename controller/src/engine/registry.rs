//! The agents connected right now, by zone. The zone recorded here is the
//! one the controller derived for the agent, never one the agent merely said.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgrollout_shared::proto::{AgentInfo, ControllerMessage};
use tokio::sync::{mpsc, watch};

/// One connected agent session.
pub struct AgentHandle {
    pub session: u64,
    pub name: String,
    pub zone: String,
    pub version: String,
    pub targets: Vec<crate::domain::agent_report::AgentTarget>,
    pub connected_at: i64,
    pub last_heartbeat: AtomicI64,
    /// The agent said it is stopping: it finishes its jobs, gets no new one.
    pub draining: AtomicBool,
    /// The verified certificate (absent only in `--dev-plaintext` mode).
    pub certificate: Option<crate::auth::PeerCertificate>,
    /// Messages to the agent; the session's stream drains it.
    /// An `Err` ends the session with that error (`disconnect`).
    pub sender: mpsc::Sender<Result<ControllerMessage, super::error::EngineError>>,
}

impl From<&AgentHandle> for crate::telemetry::relay::AgentStamp {
    fn from(agent: &AgentHandle) -> Self {
        Self {
            name: agent.name.clone(),
            zone: agent.zone.clone(),
            identity: agent.certificate.as_ref().map(|c| c.id.to_string()),
        }
    }
}

impl AgentHandle {
    pub fn serves(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t.name == target)
    }

    /// Whether its certificate has expired: it gets no job from that moment,
    /// even before its connection is closed.
    pub fn expired(&self) -> bool {
        self.certificate.as_ref().is_some_and(|c| c.expired())
    }

    /// Ends the session with `error`: the link closes the agent's stream
    /// with it, and a `Forbidden` (permission denied) is final for the agent.
    pub fn disconnect(&self, error: super::error::EngineError) {
        let _ = self.sender.try_send(Err(error));
    }
}

pub struct Registry {
    agents: Mutex<HashMap<u64, Arc<AgentHandle>>>,
    next_session: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            agents: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            changed: watch::channel(0).0,
        }
    }
}

impl Registry {
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::SeqCst)
    }

    /// Adds a session. An older session of the same zone and name is
    /// replaced: an agent that reconnects is the same agent.
    pub fn register(&self, handle: Arc<AgentHandle>) {
        let mut agents = self.lock();
        agents.retain(|_, a| !(a.zone == handle.zone && a.name == handle.name));
        agents.insert(handle.session, handle);
        drop(agents);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Removes a session; `false` if it had already been replaced.
    pub fn unregister(&self, session: u64) -> bool {
        let removed = self.lock().remove(&session).is_some();
        self.changed.send_modify(|v| *v += 1);
        removed
    }

    /// An agent of `zone` serving `target`, waiting up to `wait` for one to
    /// connect. Prefers the most recently heard-from agent.
    pub async fn wait_for(
        &self,
        zone: &str,
        target: &str,
        wait: Duration,
    ) -> Option<Arc<AgentHandle>> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(agent) = self.pick(zone, target) {
                return Some(agent);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    fn pick(&self, zone: &str, target: &str) -> Option<Arc<AgentHandle>> {
        self.lock()
            .values()
            .filter(|a| {
                a.zone == zone
                    && a.serves(target)
                    && !a.expired()
                    && !a.draining.load(Ordering::Relaxed)
            })
            .max_by_key(|a| a.last_heartbeat.load(Ordering::Relaxed))
            .cloned()
    }

    /// The session of agent `zone/name` connected here, when it may take a
    /// job (a job recorded on another controller for it: `delivery.rs`).
    pub fn holding(&self, zone: &str, name: &str) -> Option<Arc<AgentHandle>> {
        self.lock()
            .values()
            .find(|a| {
                a.zone == zone
                    && a.name == name
                    && !a.expired()
                    && !a.draining.load(Ordering::Relaxed)
            })
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<AgentHandle>> {
        self.lock().values().cloned().collect()
    }

    pub fn list(&self) -> Vec<AgentInfo> {
        let mut agents: Vec<AgentInfo> = self
            .lock()
            .values()
            .map(|a| AgentInfo {
                name: a.name.clone(),
                zone: a.zone.clone(),
                version: a.version.clone(),
                targets: a.targets.iter().map(Into::into).collect(),
                connected_at_unix_ms: a.connected_at,
                last_heartbeat_unix_ms: a.last_heartbeat.load(Ordering::Relaxed),
                draining: a.draining.load(Ordering::Relaxed),
            })
            .collect();
        agents.sort_by(|a, b| (&a.zone, &a.name).cmp(&(&b.zone, &b.name)));
        agents
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<AgentHandle>>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }
}
