//! What a failed target does to the rest of a fleet rollout (issue 24). A
//! leaf: the one-target rollout carries it without knowing fleets.

use crate::store::fleet_policy;

/// What a failed target does to the rest of the fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Leave the remaining targets untouched (listed), stop.
    #[default]
    Halt,
    /// Go on with the other targets.
    Continue,
    /// Roll back every target already done, in reverse order, and stop.
    Rollback,
}

impl Policy {
    pub fn from_flags(
        continue_on_error: bool,
        rollback_on_failure: bool,
    ) -> Result<Policy, String> {
        match (continue_on_error, rollback_on_failure) {
            (true, true) => Err(
                "--continue-on-error and --rollback-on-failure contradict each other: choose one"
                    .into(),
            ),
            (true, false) => Ok(Policy::Continue),
            (false, true) => Ok(Policy::Rollback),
            (false, false) => Ok(Policy::Halt),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Halt => fleet_policy::HALT,
            Policy::Continue => fleet_policy::CONTINUE,
            Policy::Rollback => fleet_policy::ROLLBACK,
        }
    }

    pub fn parse(text: &str) -> Policy {
        match text {
            fleet_policy::CONTINUE => Policy::Continue,
            fleet_policy::ROLLBACK => Policy::Rollback,
            _ => Policy::Halt,
        }
    }
}
