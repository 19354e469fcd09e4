//! Draining (issue 21): on SIGTERM the agent takes no new job, tells the
//! controller so (now and in every later Hello), finishes the jobs it runs
//! and waits for their results to be acknowledged before it exits.

use std::time::{Duration, SystemTime};

use pgrollout_shared::proto::{agent_message::Body, AgentMessage, Draining};

use super::{Inner, Outbox};

impl Outbox {
    /// Stops taking jobs and says so on the current session; returns how
    /// many jobs still run.
    pub fn begin_drain(&self) -> usize {
        let mut inner = self.shared.lock();
        inner.draining = true;
        let running = inner.running.len();
        if let Some(session) = &inner.session {
            let _ = session.send(AgentMessage {
                body: Some(Body::Draining(Draining {
                    running: u32::try_from(running).unwrap_or(u32::MAX),
                })),
            });
        }
        running
    }

    pub fn is_draining(&self) -> bool {
        self.shared.lock().draining
    }

    /// How long the drain may wait: until the latest deadline of a running
    /// job (each job stops itself there), plus `grace` for its report.
    pub fn drain_limit(&self, grace: Duration) -> Duration {
        let now = SystemTime::now();
        self.shared
            .lock()
            .deadlines
            .values()
            .map(|deadline| deadline.duration_since(now).unwrap_or_default())
            .max()
            .unwrap_or_default()
            + grace
    }

    /// Resolves once no job runs and every result was acknowledged — or,
    /// while the link is down, kept in the journal for the next start.
    pub async fn drained(&self) {
        let mut changes = self.shared.changed.subscribe();
        loop {
            if drained(&self.shared.lock()) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

fn drained(inner: &Inner) -> bool {
    inner.running.is_empty()
        && inner.unsettled == 0
        && (inner.pending.is_empty() || inner.session.is_none())
}
