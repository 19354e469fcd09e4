//! Fencing (DESIGN §4.5). A job carries a lease: if the agent hears nothing
//! from the controller for longer than that, the controller may already have
//! declared the job `unknown` and an operator may be retrying it elsewhere, so
//! the agent abandons whatever it has not yet committed. Dropping the work
//! drops its database connection, and PostgreSQL rolls the transaction back.
//!
//! A COMMIT already sent is never cut off (its outcome would be in doubt),
//! and once a job's last COMMIT succeeded the fence no longer applies: the
//! post-commit smoke test and an automatic rollback must be allowed to finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::jobs::context::{deploy_lock, JobContext, JobFailure};
use tokio_postgres::error::SqlState;

use crate::sql::TargetConnection;

#[derive(Default)]
pub struct Fence {
    committing: AtomicBool,
    past_commit: AtomicBool,
    /// The job's transaction connections, to cancel before abandoning them.
    connections: std::sync::Mutex<Vec<tokio_postgres::CancelToken>>,
}

impl JobContext {
    /// Commits the job's transaction unless the lease ran out. `last`: this
    /// is the job's final COMMIT, after which nothing is fenced.
    pub async fn commit(&self, conn: &TargetConnection, last: bool) -> Result<(), JobFailure> {
        if let Some(silent) = self.lease_expired() {
            return Err(JobFailure::deploy(self.fenced_message(silent)));
        }
        // The deploy lock is asserted in the COMMIT's own request, ahead of
        // it: a lock held then is held at COMMIT; one gone fails the
        // assertion and the COMMIT is never run.
        let assert_held = conn.holds_deploy_lock();
        // A sealed transaction (`txn_seal`) is unsealed in the same request.
        let commit = match conn.sealed_xid() {
            Some(_) => crate::jobs::context::txn_seal::UNSEAL_AND_COMMIT,
            None => "COMMIT",
        };
        let statement = if assert_held {
            format!("{}; {commit}", deploy_lock::ASSERT_HELD)
        } else {
            commit.to_owned()
        };
        self.fence.committing.store(true, Ordering::SeqCst);
        conn.set_sealed_xid(None);
        let committed = match conn.client.batch_execute(&statement).await {
            Ok(()) => Ok(()),
            Err(e) if assert_held && e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
                // Rolled back here, explicitly: nothing was committed.
                let _ = conn.client.batch_execute("ROLLBACK").await;
                Err(JobFailure::deploy(deploy_lock::released_message(
                    &self.target.name,
                )))
            }
            Err(e) => Err(JobFailure::database("COMMIT failed", e)),
        };
        if last && committed.is_ok() {
            self.fence.past_commit.store(true, Ordering::SeqCst);
        }
        self.fence.committing.store(false, Ordering::SeqCst);
        committed
    }

    /// Registers the connection that carries the job's transaction, so that
    /// abandoning the job (deadline, fence) cancels what it is running.
    pub fn watch_connection(&self, conn: &TargetConnection) {
        self.fence
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn.client.cancel_token());
    }

    /// Cancels the statements of every watched connection (bounded: a dead
    /// server must not hold the job's report back).
    pub async fn cancel_queries(&self) {
        let tokens: Vec<_> = self
            .fence
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for token in tokens {
            let cancel = crate::sql::cancel_query(&self.target, &token);
            let _ = tokio::time::timeout(Duration::from_secs(2), cancel).await;
        }
    }

    /// Marks the point after which the job only verifies what it committed.
    pub fn fence_lifted(&self) {
        self.fence.past_commit.store(true, Ordering::SeqCst);
    }

    /// Resolves when the job must be abandoned: its lease ran out while no
    /// COMMIT was under way. Never, for a job without a lease.
    pub async fn fenced(&self) -> Duration {
        let Some(lease) = self.job.lease else {
            return std::future::pending().await;
        };
        let mut ticker = tokio::time::interval(
            (lease / 20).clamp(Duration::from_millis(20), Duration::from_millis(500)),
        );
        loop {
            ticker.tick().await;
            if self.fence.past_commit.load(Ordering::SeqCst)
                || self.fence.committing.load(Ordering::SeqCst)
            {
                continue;
            }
            if let Some(silent) = self.lease_expired() {
                return silent;
            }
        }
    }

    fn lease_expired(&self) -> Option<Duration> {
        let lease = self.job.lease?;
        let silent = self.outbox.silent_for();
        (silent > lease).then_some(silent)
    }

    pub fn fenced_message(&self, silent: Duration) -> String {
        format!(
            "fenced: no word from the controller for {:.1}s, longer than the job's lease of {}; the work not yet \
             committed was rolled back; whatever this job committed before is in the target's ledger",
            silent.as_secs_f64(),
            humantime::format_duration(self.job.lease.unwrap_or_default()),
        )
    }
}
