//! A job's connection, opened as soon as the link has taken the job on:
//! while the job's start is journaled (an fsync), accepted and set up, the
//! backend forks and the SCRAM exchange runs — a few milliseconds every job
//! spent before its first statement (issue 15 item 9). The `connect` step
//! then waits for this connection instead of opening one.
//!
//! It is started only for a job the link runs (after its offer was checked,
//! never for a duplicate), with the job's own target and timeouts, so it is
//! the connection the job would have opened a moment later. Dropped unused
//! (a job kind that connects otherwise), it is abandoned and closed.
//!
//! Never on an agent with an `[approvals]` policy: there a job's signatures
//! are verified before the agent opens any connection to its target, not
//! even one abandoned before it authenticated (issue 19) — a forged job must
//! not reach the database at all.

use pgrollout_shared::job::{Job, JobKind};
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::sql::{self, ConnectError, TargetConnection};

/// A connection being opened for one job, or none.
#[derive(Default)]
pub struct EarlyConnection {
    opening: Option<JoinHandle<Result<TargetConnection, ConnectError>>>,
}

impl EarlyConnection {
    /// Starts connecting to `job`'s target now, when the job opens with the
    /// `connect` step; none under an approval policy (the signatures come
    /// first), for a watch sample (it connects on its own terms) or for a
    /// target this agent does not serve (the job refuses it).
    pub fn start(job: &Job, config: &AgentConfig) -> EarlyConnection {
        if config.approval_policy.is_some() || matches!(job.kind, JobKind::WatchSample(_)) {
            return EarlyConnection::default();
        }
        let Some(target) = config.target(&job.target).cloned() else {
            return EarlyConnection::default();
        };
        let timeouts = config.timeouts.clone();
        EarlyConnection {
            opening: Some(tokio::spawn(async move {
                sql::connect(&target, &timeouts).await
            })),
        }
    }

    /// The connection (or why it could not be opened); `None` when none was
    /// started or its task ended without an answer, and the caller opens
    /// one itself.
    pub async fn take(mut self) -> Option<Result<TargetConnection, ConnectError>> {
        self.opening.take()?.await.ok()
    }
}

impl Drop for EarlyConnection {
    fn drop(&mut self) {
        if let Some(opening) = self.opening.take() {
            opening.abort();
        }
    }
}
