//! The single-statement runner and the failures every step builds from a
//! database error — one text for each, whichever job kind runs it.

use pgrollout_shared::proto::{JobResult, Outcome, SmokeReport};

use crate::jobs::context::{Finished, JobFailure};
use crate::sql::TargetConnection;

/// Runs one statement that returns nothing (`BEGIN`, `SAVEPOINT`, …); a
/// failure names it.
pub async fn simple(conn: &TargetConnection, statement: &str) -> Result<(), JobFailure> {
    conn.client
        .batch_execute(statement)
        .await
        .map_err(|e| database(format!("{statement} failed"), e))
}

/// A database error as a failure during execution (exit 2): `what` failed,
/// then the error as `describe_error` renders it.
pub fn database(what: impl Into<String>, error: tokio_postgres::Error) -> JobFailure {
    JobFailure::database(what, error)
}

/// Refused before anything changed (exit 1).
pub fn refused(message: impl Into<String>) -> JobFailure {
    JobFailure::new(Outcome::ValidationFailed, message)
}

/// A job that stopped before its result: why, and what it found so far.
#[derive(Debug)]
pub struct Stopped {
    pub failure: JobFailure,
    pub smoke: Vec<SmokeReport>,
    pub warnings: Vec<String>,
}

impl From<JobFailure> for Stopped {
    fn from(failure: JobFailure) -> Self {
        Stopped {
            failure,
            smoke: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Stopped {
    /// The job's report, with the SQLSTATE it stopped at for its span; the
    /// failure is logged here, once.
    pub fn into_result(self) -> Finished {
        self.failure.log();
        Finished {
            sqlstate: self.failure.sql_state().cloned(),
            result: JobResult {
                outcome: self.failure.outcome as i32,
                message: self.failure.message(),
                smoke: self.smoke,
                warnings: self.warnings,
                ..Default::default()
            },
        }
    }
}
