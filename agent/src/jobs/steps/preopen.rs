//! The connections of the post-commit smoke test, opened in the background
//! while the deploy's transaction runs. The smoke test must run on other
//! connections than the one that committed; opening them (a backend fork,
//! SCRAM, TLS) and making their seal's table (`txn_seal::prepare_table`)
//! only after COMMIT put that cost on the critical path of every deploy.
//! They stay idle, outside any transaction, until they are taken after
//! COMMIT.
//!
//! A plan with many smoke calls gets several (the target's
//! `post_commit_connections`): the calls are spread over their sessions,
//! which the server runs side by side.

use pgrollout_shared::routine::Routine;
use tokio::task::JoinHandle;

use crate::jobs::context::{txn_seal, JobContext};
use crate::sql::{self, ConnectError, TargetConnection};

/// Below this many smoke calls per session, another session costs more
/// (its caches start cold) than it saves.
const MIN_CALLS_PER_SESSION: usize = 8;

/// Connections being opened; dropping them abandons (and closes) them.
pub struct PreOpened {
    opening: Vec<JoinHandle<Result<TargetConnection, ConnectError>>>,
    /// How many [`PreOpened::begin`] opens.
    sessions: usize,
}

impl PreOpened {
    /// As many connections as `routines`' smoke calls are worth, up to the
    /// target's limit; none is opened before [`PreOpened::begin`].
    pub fn planned(ctx: &JobContext, routines: &[Routine]) -> PreOpened {
        let calls: usize = routines.iter().map(|r| r.smoke_tests.len()).sum();
        PreOpened {
            opening: Vec::new(),
            sessions: sessions_for(calls, ctx.target.post_commit_connections),
        }
    }

    /// Starts connecting now, each connection on a task of its own. The
    /// deploy calls it as its CREATEs go out: the database then
    /// works on one core for tens of milliseconds. Opened earlier, two
    /// backend forks and their SCRAM exchanges took the cores the snapshot
    /// and the backup's start needed (issue 15 item 9).
    pub fn begin(&mut self, ctx: &JobContext) {
        if !self.opening.is_empty() {
            return;
        }
        self.opening = (0..self.sessions)
            .map(|_| {
                let target = ctx.target.clone();
                let timeouts = ctx.config.timeouts.clone();
                tokio::spawn(async move {
                    let conn = sql::connect(&target, &timeouts).await?;
                    // Without its table made ahead, the sealed BEGIN
                    // makes one as usual.
                    if let Err(error) = txn_seal::prepare_table(&conn).await {
                        tracing::debug!(%error, "the post-commit seal's table is made at BEGIN instead");
                    }
                    Ok(conn)
                })
            })
            .collect();
    }

    /// Nothing opened ahead: [`PreOpened::take`] connects then.
    pub fn later() -> PreOpened {
        PreOpened {
            opening: Vec::new(),
            sessions: 0,
        }
    }

    /// The connections that opened ahead, or one opened now when none did.
    pub async fn take(mut self, ctx: &JobContext) -> Result<Vec<TargetConnection>, ConnectError> {
        let mut opened = Vec::with_capacity(self.opening.len());
        for opening in std::mem::take(&mut self.opening) {
            // One that failed (or whose task did) is left out: the others
            // share its calls.
            if let Ok(Ok(conn)) = opening.await {
                opened.push(conn);
            }
        }
        if opened.is_empty() {
            opened.push(sql::connect(&ctx.target, &ctx.config.timeouts).await?);
        }
        Ok(opened)
    }
}

/// How many sessions `calls` smoke calls are spread over, at most `limit`.
fn sessions_for(calls: usize, limit: usize) -> usize {
    (calls / MIN_CALLS_PER_SESSION).clamp(1, limit.max(1))
}

impl Drop for PreOpened {
    fn drop(&mut self) {
        for opening in self.opening.drain(..) {
            opening.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sessions_for;

    #[test]
    fn few_calls_use_one_session_and_many_use_up_to_the_limit() {
        assert_eq!(sessions_for(0, 2), 1);
        assert_eq!(sessions_for(15, 2), 1);
        assert_eq!(sessions_for(16, 2), 2);
        assert_eq!(sessions_for(150, 2), 2);
        assert_eq!(sessions_for(150, 8), 8);
        assert_eq!(sessions_for(150, 1), 1);
        assert_eq!(sessions_for(150, 0), 1);
    }
}
