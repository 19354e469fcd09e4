//! Domain types of the jobs that reverse or inspect changes — rollback,
//! disable, enable and history (issue 6) — validated from their wire forms.
//!
//! They name routines with a [`RoutineSelector`] rather than carrying a plan:
//! what to restore is decided on the agent, from the target's ledger, which is
//! the only complete record of what each database went through.

use crate::proto;
use crate::routine::{InvalidField, Routine, MAX_IDENTIFIER_BYTES};

/// Most known versions one rollback job may carry.
pub const MAX_KNOWN_VERSIONS: usize = 10_000;
/// Longest emergency reason accepted.
pub const MAX_REASON_BYTES: usize = 1_000;

/// Which routines an operator's `<procedure>` names: the parts the
/// controller's parser found. Matching happens on the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutineSelector {
    /// `None`: any schema.
    pub schema: Option<String>,
    pub name: String,
    /// `None`: every overload. Types as `format_type` spells them.
    pub arg_types: Option<Vec<String>>,
}

impl RoutineSelector {
    /// The arguments as `regprocedure` text writes them (`text,integer`), for
    /// matching ledger identities.
    pub fn regprocedure_args(&self) -> Option<String> {
        self.arg_types.as_ref().map(|types| types.join(","))
    }
}

/// A rollback job: what to undo or restore, and the controller's versions.
#[derive(Clone, Debug)]
pub struct RollbackSpec {
    pub scope: RollbackScope,
    pub target: RollbackTarget,
    /// `Some(reason)`: emergency — no smoke tests; the reason is recorded.
    pub emergency: Option<String>,
    /// The second source (after the zone's backups), keyed by the SHA-256 of
    /// the definition each version produced.
    pub known_versions: Vec<KnownVersion>,
}

/// Which routines a rollback touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackScope {
    Routines(RoutineSelector),
    /// Every routine this rollout changed, in reverse deploy order.
    Rollout(String),
}

/// Which version each routine goes back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackTarget {
    /// The state before the latest change not yet undone.
    Previous,
    /// The state a ledger row put in place.
    LedgerId(i64),
    /// The state a plan deployed; a full id or a prefix of 8+ hex digits.
    PlanId(String),
}

/// One routine as an earlier plan deployed it.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownVersion {
    pub definition_sha256: String,
    pub plan_id: String,
    pub commit_sha: String,
    pub routine: Routine,
}

/// A disable job: rename, or revoke EXECUTE from every grantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisableSpec {
    pub routines: RoutineSelector,
    pub revoke: bool,
}

/// Whether `text` is a plan id or a prefix of one long enough to be specific.
pub fn is_plan_id_prefix(text: &str) -> bool {
    (8..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

impl TryFrom<proto::RoutineSelector> for RoutineSelector {
    type Error = InvalidField;

    fn try_from(wire: proto::RoutineSelector) -> Result<Self, Self::Error> {
        let identifier = |field: &str, value: &str| {
            if value.is_empty()
                || value.len() > MAX_IDENTIFIER_BYTES
                || value.chars().any(char::is_control)
            {
                return Err(invalid(field, "not an identifier"));
            }
            Ok(())
        };
        identifier("routines.name", &wire.name)?;
        if !wire.schema.is_empty() {
            identifier("routines.schema", &wire.schema)?;
        }
        for (index, arg) in wire.arg_types.iter().enumerate() {
            if arg.trim().is_empty() || arg.len() > 256 || arg.chars().any(char::is_control) {
                return Err(invalid(
                    &format!("routines.arg_types[{index}]"),
                    "not a type name",
                ));
            }
        }
        Ok(RoutineSelector {
            schema: (!wire.schema.is_empty()).then_some(wire.schema),
            name: wire.name,
            arg_types: wire.has_arg_types.then_some(wire.arg_types),
        })
    }
}

impl From<RoutineSelector> for proto::RoutineSelector {
    fn from(selector: RoutineSelector) -> Self {
        proto::RoutineSelector {
            schema: selector.schema.unwrap_or_default(),
            name: selector.name,
            has_arg_types: selector.arg_types.is_some(),
            arg_types: selector.arg_types.unwrap_or_default(),
        }
    }
}

fn selector(wire: Option<proto::RoutineSelector>) -> Result<RoutineSelector, InvalidField> {
    wire.ok_or_else(|| invalid("routines", "missing"))?
        .try_into()
}

impl TryFrom<proto::RollbackJob> for RollbackSpec {
    type Error = InvalidField;

    fn try_from(wire: proto::RollbackJob) -> Result<Self, Self::Error> {
        let scope = match (wire.routines, wire.undo_rollout_id.is_empty()) {
            (Some(routines), true) => RollbackScope::Routines(routines.try_into()?),
            (None, false) if wire.undo_rollout_id.len() <= 256 => {
                RollbackScope::Rollout(wire.undo_rollout_id)
            }
            _ => {
                return Err(invalid(
                    "routines",
                    "exactly one of routines and undo_rollout_id must be set",
                ))
            }
        };
        let target = match (wire.to_ledger_id, wire.to_plan_id.as_str()) {
            (0, "") => RollbackTarget::Previous,
            (id, "") if id > 0 => RollbackTarget::LedgerId(id),
            (0, plan) if is_plan_id_prefix(plan) => {
                RollbackTarget::PlanId(plan.to_ascii_lowercase())
            }
            _ => {
                return Err(invalid(
                    "to",
                    "a positive ledger id or a plan id of 8 to 64 hex digits, not both",
                ))
            }
        };
        if matches!(scope, RollbackScope::Rollout(_)) && target != RollbackTarget::Previous {
            return Err(invalid(
                "to",
                "a whole rollout is undone, not moved to a version",
            ));
        }
        let emergency = match (wire.emergency, wire.reason.trim()) {
            (false, _) => None,
            (true, "") => return Err(invalid("reason", "an emergency rollback needs a reason")),
            (true, reason) if reason.len() > MAX_REASON_BYTES => {
                return Err(invalid("reason", format!("over {MAX_REASON_BYTES} bytes")))
            }
            (true, reason) => Some(reason.to_owned()),
        };
        if wire.known_versions.len() > MAX_KNOWN_VERSIONS {
            return Err(invalid("known_versions", "too many"));
        }
        let known_versions = wire
            .known_versions
            .into_iter()
            .enumerate()
            .map(|(index, known)| {
                let field = format!("known_versions[{index}]");
                let routine = known
                    .routine
                    .ok_or_else(|| invalid(&field, "no routine"))?
                    .try_into()
                    .map_err(|e: InvalidField| {
                        invalid(&format!("{field}.{}", e.field), e.reason)
                    })?;
                if known.definition_sha256.len() != 64 {
                    return Err(invalid(&field, "definition_sha256 is not a SHA-256"));
                }
                Ok(KnownVersion {
                    definition_sha256: known.definition_sha256,
                    plan_id: known.plan_id,
                    commit_sha: known.commit_sha,
                    routine,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RollbackSpec {
            scope,
            target,
            emergency,
            known_versions,
        })
    }
}

impl RollbackSpec {
    /// The wire form, with the job's label.
    pub fn into_wire(self, label: String) -> proto::RollbackJob {
        let (routines, undo_rollout_id) = match self.scope {
            RollbackScope::Routines(selector) => (Some(selector.into()), String::new()),
            RollbackScope::Rollout(id) => (None, id),
        };
        let (to_ledger_id, to_plan_id) = match self.target {
            RollbackTarget::Previous => (0, String::new()),
            RollbackTarget::LedgerId(id) => (id, String::new()),
            RollbackTarget::PlanId(plan) => (0, plan),
        };
        proto::RollbackJob {
            label,
            routines,
            undo_rollout_id,
            to_ledger_id,
            to_plan_id,
            emergency: self.emergency.is_some(),
            reason: self.emergency.unwrap_or_default(),
            known_versions: self
                .known_versions
                .into_iter()
                .map(|known| proto::KnownVersion {
                    definition_sha256: known.definition_sha256,
                    plan_id: known.plan_id,
                    commit_sha: known.commit_sha,
                    routine: Some(known.routine.into()),
                })
                .collect(),
        }
    }
}

impl TryFrom<proto::DisableJob> for DisableSpec {
    type Error = InvalidField;

    fn try_from(wire: proto::DisableJob) -> Result<Self, Self::Error> {
        Ok(DisableSpec {
            routines: selector(wire.routines)?,
            revoke: wire.revoke,
        })
    }
}

/// The selector of an enable or history job.
pub fn selector_from_wire(
    wire: Option<proto::RoutineSelector>,
) -> Result<RoutineSelector, InvalidField> {
    selector(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_selector() -> proto::RoutineSelector {
        proto::RoutineSelector {
            schema: String::new(),
            name: "addarc".into(),
            has_arg_types: false,
            arg_types: vec![],
        }
    }

    #[test]
    fn a_rollback_round_trips_through_the_wire() {
        let spec = RollbackSpec {
            scope: RollbackScope::Routines(RoutineSelector {
                schema: Some("public".into()),
                name: "addarc".into(),
                arg_types: Some(vec!["text".into(), "text".into()]),
            }),
            target: RollbackTarget::PlanId("3f2a9c0d".into()),
            emergency: Some("prod is down".into()),
            known_versions: vec![],
        };
        let back = RollbackSpec::try_from(spec.clone().into_wire("addarc".into())).expect("valid");
        assert_eq!(back.scope, spec.scope);
        assert_eq!(back.target, spec.target);
        assert_eq!(back.emergency, spec.emergency);
    }

    #[test]
    fn an_emergency_without_a_reason_is_refused() {
        let wire = proto::RollbackJob {
            routines: Some(wire_selector()),
            emergency: true,
            reason: "  ".into(),
            ..Default::default()
        };
        assert_eq!(
            RollbackSpec::try_from(wire).expect_err("no reason").field,
            "reason"
        );
    }

    #[test]
    fn scope_and_target_must_be_unambiguous() {
        let both = proto::RollbackJob {
            routines: Some(wire_selector()),
            undo_rollout_id: "r-1".into(),
            ..Default::default()
        };
        assert!(RollbackSpec::try_from(both).is_err());
        let short_plan = proto::RollbackJob {
            routines: Some(wire_selector()),
            to_plan_id: "abc".into(),
            ..Default::default()
        };
        assert_eq!(
            RollbackSpec::try_from(short_plan).expect_err("short").field,
            "to"
        );
        let rollout_to = proto::RollbackJob {
            undo_rollout_id: "r-1".into(),
            to_ledger_id: 4,
            ..Default::default()
        };
        assert!(RollbackSpec::try_from(rollout_to).is_err());
    }

    #[test]
    fn selector_args_render_like_regprocedure() {
        let selector = RoutineSelector::try_from(proto::RoutineSelector {
            has_arg_types: true,
            arg_types: vec!["text".into(), "timestamp with time zone".into()],
            ..wire_selector()
        })
        .expect("valid");
        assert_eq!(
            selector.regprocedure_args().as_deref(),
            Some("text,timestamp with time zone")
        );
        assert!(RoutineSelector::try_from(proto::RoutineSelector {
            name: String::new(),
            ..wire_selector()
        })
        .is_err());
    }
}
