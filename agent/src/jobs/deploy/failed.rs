//! How a deploy that stopped reports: the failure, the smoke reports so far
//! and what became of each routine.

use pgrollout_shared::proto::{Outcome, RoutineOutcome, SmokeReport};
use pgrollout_shared::routine::Routine;

use crate::jobs::context::JobFailure;
use crate::jobs::steps::apply::smoke_summary;

/// A deploy that stopped: why, the smoke reports so far, and what happened
/// to each routine.
pub struct Failed {
    pub failure: JobFailure,
    pub smoke: Vec<SmokeReport>,
    pub outcomes: Vec<RoutineOutcome>,
}

impl From<JobFailure> for Failed {
    fn from(failure: JobFailure) -> Self {
        Failed {
            failure,
            smoke: Vec::new(),
            outcomes: Vec::new(),
        }
    }
}

/// The same status for every routine (e.g. all rolled back).
pub fn outcomes_all(routines: &[Routine], status: &str) -> Vec<RoutineOutcome> {
    routines
        .iter()
        .map(|r| RoutineOutcome {
            identity: r.identity.to_string(),
            status: status.into(),
            ..Default::default()
        })
        .collect()
}

/// A smoke failure as a deploy failure: exit 3, the failed routines named.
pub(super) fn failed_smoke(
    routines: &[Routine],
    reports: &[SmokeReport],
    consequence: &str,
) -> Option<Failed> {
    if reports.iter().all(|r| r.passed) {
        return None;
    }
    let mut outcomes = outcomes_all(routines, "rolled-back");
    for (outcome, routine) in outcomes.iter_mut().zip(routines) {
        let name = routine.identity.to_string();
        if let Some(report) = reports.iter().find(|r| r.routine == name && !r.passed) {
            outcome.status = "failed".into();
            outcome.error = format!("smoke test {:?} failed", report.test);
        }
    }
    Some(Failed {
        failure: JobFailure::new(
            Outcome::SmokeFailed,
            format!(
                "smoke test failed ({}); {consequence}",
                smoke_summary(reports)
            ),
        ),
        smoke: reports.to_vec(),
        outcomes,
    })
}
