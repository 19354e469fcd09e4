//! Where a reversal is, for what a timeout must say.

use std::sync::Mutex;

use pgrollout_shared::proto::{JobResult, Outcome};

/// Which step the job is in, and whether it committed: what a timeout
/// message must say.
#[derive(Default)]
pub struct Progress {
    step: Mutex<String>,
    committed: Mutex<Option<String>>,
}

impl Progress {
    pub fn at(&self, step: &str) {
        *self.step.lock().unwrap_or_else(|p| p.into_inner()) = step.to_owned();
    }

    /// Records that the reversal committed, with what it restored.
    pub fn committed(&self, summary: String) {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
    }

    pub fn timed_out(&self) -> JobResult {
        let step = self.step.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match committed {
            None => JobResult {
                outcome: Outcome::DeployFailed as i32,
                message: format!(
                    "the rollback reached its time limit (rollback_timeout) during step {step}; its transaction was \
                     rolled back, so the database is exactly as it was before the rollback: the version it meant \
                     to undo is still live"
                ),
                ..Default::default()
            },
            Some(summary) => JobResult {
                outcome: Outcome::SmokeFailed as i32,
                message: format!(
                    "the restore was committed ({summary}), but the rollback reached its time limit \
                     (rollback_timeout) during step {step}: the restored version is live and unverified; run \
                     `pgrollout smoke` on it"
                ),
                ..Default::default()
            },
        }
    }
}
