//! One row of SEED.md's deployment metrics (definitions in `super`).

/// The figures of one procedure in one environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcedureFigures {
    pub procedure: String,
    pub environment: String,
    pub deployments: u64,
    pub successes: u64,
    /// `None` without deployments.
    pub average_duration_ms: Option<u64>,
    pub rollbacks: u64,
    /// `None` when no rollback was matched to a bad deploy.
    pub mttr_ms: Option<u64>,
    pub mttr_samples: u64,
}

impl ProcedureFigures {
    /// Successes over deployments; `None` without deployments.
    pub fn success_rate(&self) -> Option<f64> {
        (self.deployments > 0).then(|| self.successes as f64 / self.deployments as f64)
    }
}
