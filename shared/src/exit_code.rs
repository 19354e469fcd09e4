//! The exit codes of every operator command (DESIGN §9, SEED.md).

use crate::proto;

/// What a command's process exit status means to the operator and to CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything requested was done and verified.
    Success = 0,
    /// Refused before anything changed: bad input, a gate, a syntax error.
    ValidationFailed = 1,
    /// Failed during execution (database or agent error); rolled back.
    DeploymentFailed = 2,
    /// A smoke test failed after the change; rolled back.
    SmokeTestFailed = 3,
    /// Accepted and recorded as a request that waits for people (approvals
    /// or sign-offs); nothing changed yet. Distinct from 1 so a script can
    /// tell "waiting" from "refused".
    AwaitingApproval = 5,
    /// `pgrollout drift` found routines that differ from what the ledger
    /// last recorded (issue 20); nothing was changed.
    DriftFound = 4,
}

/// The gRPC metadata key by which the controller marks the status of a
/// request it parked for approval (its value is the request id), so the CLI
/// can exit with [`ExitCode::AwaitingApproval`] without reading message text.
pub const AWAITING_APPROVAL_METADATA: &str = "pgrollout-awaiting-approval";

impl ExitCode {
    /// The numeric status for `std::process::exit`.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Maps an agent's job outcome to the exit code the CLI returns.
    pub fn from_outcome(outcome: proto::Outcome) -> Self {
        match outcome {
            proto::Outcome::Succeeded => ExitCode::Success,
            proto::Outcome::ValidationFailed => ExitCode::ValidationFailed,
            proto::Outcome::SmokeFailed => ExitCode::SmokeTestFailed,
            proto::Outcome::DeployFailed | proto::Outcome::Unspecified => {
                ExitCode::DeploymentFailed
            }
        }
    }
}
