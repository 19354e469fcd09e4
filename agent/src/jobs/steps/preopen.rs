//! A second connection to the target opened in the background while the
//! deploy's transaction runs, for the post-commit smoke test. The smoke test
//! must run on a different connection than the one that committed; opening
//! it (a backend fork, SCRAM, TLS) only after COMMIT put that cost on the
//! critical path of every deploy. The connection stays idle, outside any
//! transaction, until it is taken after COMMIT.

use tokio::task::JoinHandle;

use crate::jobs::context::JobContext;
use crate::sql::{self, ConnectError, TargetConnection};

/// A connection being opened; dropping it abandons (and closes) it.
pub struct PreOpened(Option<JoinHandle<Result<TargetConnection, ConnectError>>>);

impl PreOpened {
    /// Starts connecting now, on a task of its own.
    pub fn start(ctx: &JobContext) -> PreOpened {
        let target = ctx.target.clone();
        let timeouts = ctx.config.timeouts.clone();
        PreOpened(Some(tokio::spawn(async move {
            sql::connect(&target, &timeouts).await
        })))
    }

    /// Nothing opened ahead: [`PreOpened::take`] connects then.
    pub fn later() -> PreOpened {
        PreOpened(None)
    }

    /// The connection, opened ahead or now.
    pub async fn take(mut self, ctx: &JobContext) -> Result<TargetConnection, ConnectError> {
        if let Some(opening) = self.0.take() {
            if let Ok(Ok(opened)) = opening.await {
                return Ok(opened);
            }
            // It failed (or its task did): one more attempt now, as when
            // nothing was opened ahead.
        }
        sql::connect(&ctx.target, &ctx.config.timeouts).await
    }
}

impl Drop for PreOpened {
    fn drop(&mut self) {
        if let Some(opening) = self.0.take() {
            opening.abort();
        }
    }
}
