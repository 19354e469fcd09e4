//! The typed job error. A job that stops carries its outcome (the
//! operator's exit code), what failed, and — typed, until the report is
//! written — the error that caused it: a database error keeps its
//! `SqlState`, a connection or backup error its whole source chain. The
//! report's text is rendered from both in one place (`message`), and the
//! failure is logged once, with its chain, when it becomes the job's result.
//! The SQLSTATE travels as data (`sql_state`) to the step's and the job's
//! spans: nothing reads it back out of the text, which can quote anything.

use std::fmt;

use pgrollout_shared::errors::error_chain;
use pgrollout_shared::proto::Outcome;
use tokio_postgres::error::SqlState;

use crate::sql::{describe_error, ConnectError};

/// Why a job stopped, and which outcome (exit code) that means.
#[derive(Debug)]
pub struct JobFailure {
    pub outcome: Outcome,
    /// What failed, in the operator's words ("ledger lookup failed"); empty
    /// when the cause says it all (a connection).
    what: String,
    /// Boxed: a failure travels in every `Result` of a job, and stays small.
    cause: Option<Box<Cause>>,
    /// Said after the cause: which routine, what was left behind.
    after: String,
    /// The server's SQLSTATE behind a failure told in the agent's own words
    /// (the deploy lock's `lock_timeout`, a restore that stopped on a
    /// database error): the span's `db.response.status_code`.
    code: Option<SqlState>,
}

/// What caused a failure, kept typed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// A statement's error, rendered with SQLSTATE, detail, hint and the
    /// line of `statement` it points at.
    #[error("{}", describe_error(.error, .statement.as_deref()))]
    Database {
        error: tokio_postgres::Error,
        statement: Option<String>,
    },
    #[error("{}", error_chain(.0))]
    Connect(ConnectError),
    #[error("{}", error_chain(.0))]
    Backup(crate::backup::BackupError),
}

impl JobFailure {
    /// A failure the agent describes itself, with no error behind it.
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        JobFailure {
            outcome,
            what: message.into(),
            cause: None,
            after: String::new(),
            code: None,
        }
    }

    /// Failed during execution (exit 2), with no error behind it.
    pub fn deploy(message: impl Into<String>) -> Self {
        Self::new(Outcome::DeployFailed, message)
    }

    /// `what` failed during execution (exit 2) because of a database error.
    pub fn database(what: impl Into<String>, error: tokio_postgres::Error) -> Self {
        Self::caused(
            Outcome::DeployFailed,
            what,
            Cause::Database {
                error,
                statement: None,
            },
        )
    }

    /// As [`JobFailure::database`], the error pointing into `statement`.
    pub fn in_statement(
        what: impl Into<String>,
        error: tokio_postgres::Error,
        statement: &str,
    ) -> Self {
        let statement = Some(statement.to_owned());
        Self::caused(
            Outcome::DeployFailed,
            what,
            Cause::Database { error, statement },
        )
    }

    /// A connection that failed. A server outside the supported versions is
    /// a refusal (exit 1): nothing was tried, and retrying will not help.
    pub fn connect(error: ConnectError) -> Self {
        let outcome = match error {
            ConnectError::Unsupported { .. } => Outcome::ValidationFailed,
            _ => Outcome::DeployFailed,
        };
        Self::caused(outcome, "", Cause::Connect(error))
    }

    /// The backup file could not be written: nothing was changed.
    pub fn backup(error: crate::backup::BackupError) -> Self {
        Self::caused(
            Outcome::DeployFailed,
            "backup failed, nothing was changed",
            Cause::Backup(error),
        )
    }

    fn caused(outcome: Outcome, what: impl Into<String>, cause: Cause) -> Self {
        JobFailure {
            outcome,
            what: what.into(),
            cause: Some(Box::new(cause)),
            after: String::new(),
            code: None,
        }
    }

    /// The same failure, told in the agent's own words, with the SQLSTATE of
    /// the server error behind it (when there was one). A typed cause's own
    /// code still wins.
    pub fn with_sql_state(mut self, code: Option<&SqlState>) -> Self {
        self.code = code.cloned();
        self
    }

    /// The same failure with `text` said after it (which routine, what was
    /// left behind): the outcome and the typed cause stay.
    pub fn followed_by(mut self, text: &str) -> Self {
        self.after.push_str(text);
        self
    }

    /// The text the operator reads, in the report and the step's event.
    pub fn message(&self) -> String {
        let said = match &self.cause {
            None => self.what.clone(),
            Some(cause) if self.what.is_empty() => cause.to_string(),
            Some(cause) => format!("{}: {cause}", self.what),
        };
        said + &self.after
    }

    /// Logs the failure once, where it becomes the job's result: its whole
    /// chain and, for a database error, its SQLSTATE.
    pub fn log(&self) {
        tracing::warn!(
            outcome = ?self.outcome,
            sqlstate = self.sql_state().map(SqlState::code),
            error = %error_chain(self),
            "job failed"
        );
    }

    /// The SQLSTATE of the database error behind this failure, if any: the
    /// driver's `code()` where the failure began, never parsed from text.
    pub fn sql_state(&self) -> Option<&SqlState> {
        let caused = match self.cause.as_deref() {
            Some(Cause::Database { error, .. }) => error.code(),
            Some(Cause::Connect(error)) => error.sql_state(),
            Some(Cause::Backup(_)) | None => None,
        };
        caused.or(self.code.as_ref())
    }
}

/// What failed, without the cause (that is `source`): `error_chain` of a
/// failure is the whole story, each part once.
impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.what, &self.cause) {
            (what, Some(_)) if what.is_empty() => write!(f, "job failed{}", self.after),
            (what, _) => write!(f, "{what}{}", self.after),
        }
    }
}

impl std::error::Error for JobFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_error() -> ConnectError {
        ConnectError::Database {
            target: "main".into(),
            user: "deployer".into(),
            host: "db.internal".into(),
            port: 5432,
            dbname: "app".into(),
            reason: "connection refused".into(),
            code: None,
        }
    }

    /// The operator's text is what the string-built failures said: the
    /// cause's chain, then what follows it.
    #[test]
    fn the_report_text_is_what_failed_then_its_cause_then_what_follows() {
        let backup = JobFailure::backup(crate::backup::BackupError::Write {
            path: "/backups/x.sql".into(),
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(
            backup.message(),
            "backup failed, nothing was changed: cannot write backup /backups/x.sql: disk full"
        );
        let connect = JobFailure::connect(connect_error());
        assert_eq!(connect.outcome, Outcome::DeployFailed);
        assert_eq!(connect.message(), error_chain(&connect_error()));
        let followed = JobFailure::deploy("COMMIT failed").followed_by("; nothing was committed");
        assert_eq!(followed.message(), "COMMIT failed; nothing was committed");
        assert_eq!(backup.sql_state(), None);
    }

    /// The log line's chain says each part once: what failed, then why.
    #[test]
    fn the_chain_keeps_the_cause_as_a_source_not_a_copy() {
        let failure = JobFailure::backup(crate::backup::BackupError::Write {
            path: "/backups/x.sql".into(),
            source: std::io::Error::other("disk full"),
        });
        assert_eq!(failure.to_string(), "backup failed, nothing was changed");
        let chain = error_chain(&failure);
        assert_eq!(chain.matches("disk full").count(), 1, "{chain}");
        assert!(std::error::Error::source(&failure).is_some());
    }

    /// The SQLSTATE is the driver's, typed: a failure told in the agent's
    /// own words keeps the code it was given, whatever its text quotes.
    #[test]
    fn the_sqlstate_is_data_not_text() {
        let told = JobFailure::deploy("the call said ERROR 22012: x")
            .with_sql_state(Some(&SqlState::LOCK_NOT_AVAILABLE));
        assert_eq!(told.sql_state(), Some(&SqlState::LOCK_NOT_AVAILABLE));
        let untold = JobFailure::deploy("ERROR 42P01: looks like a server error");
        assert_eq!(untold.sql_state(), None);
        let mut error = connect_error();
        if let ConnectError::Database { code, .. } = &mut error {
            *code = Some(SqlState::INVALID_PASSWORD);
        }
        let refused = JobFailure::connect(error);
        assert_eq!(refused.sql_state(), Some(&SqlState::INVALID_PASSWORD));
    }
}
