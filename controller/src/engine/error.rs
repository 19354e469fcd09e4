//! What the engine refuses or fails with. The engine knows nothing of gRPC:
//! `api/status.rs` turns each variant into the one `Status` an operator's
//! CLI reads (and so its exit code), in one place.

use crate::store::StoreError;

/// Every variant's text is the operator's message, as the CLI prints it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (exit 1, nothing changed).
    #[error("{0}")]
    Invalid(String),
    /// No such request, rollout, watch or environment.
    #[error("{0}")]
    NotFound(String),
    /// The request is sound but refused as things stand: a gate, a state
    /// that moved on, a plan deployed nowhere (exit 1, nothing changed).
    #[error("{0}")]
    Refused(String),
    /// A watch of the same names already runs.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operator may not do this (a role, their own request).
    #[error("{0}")]
    Forbidden(String),
    /// No agent of the zone, the link went away, the controller drains.
    #[error("{0}")]
    Unavailable(String),
    /// Parked for approvers: nothing changed yet (exit 5).
    #[error("{message}")]
    AwaitingApproval { request_id: String, message: String },
    /// The store failed; `doing` says what the controller was at (`record
    /// the decision`), the source says why and goes to the log.
    #[error("the controller could not {doing}; see its log")]
    Store {
        doing: &'static str,
        #[source]
        source: StoreError,
    },
    /// Something the controller itself got wrong, not the request.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// `map_err(EngineError::store("record the decision"))`.
    pub fn store(doing: &'static str) -> impl Fn(StoreError) -> EngineError + Copy {
        move |source| EngineError::Store { doing, source }
    }

    /// What a refusal to start records on its rollout span, as
    /// `telemetry::spans::record_refusal` words a refused call's status.
    pub fn span_outcome(&self) -> &'static str {
        match self {
            EngineError::Refused(_) | EngineError::AwaitingApproval { .. } => "not-started",
            EngineError::Unavailable(_) => "no-agent",
            EngineError::Invalid(_) => "invalid",
            EngineError::Forbidden(_) => "denied",
            _ => "refused",
        }
    }

    /// The controller, not the request, is at fault: the scheduler tries
    /// such a request again later instead of refusing it.
    pub fn is_internal(&self) -> bool {
        matches!(self, EngineError::Store { .. } | EngineError::Internal(_))
    }
}
