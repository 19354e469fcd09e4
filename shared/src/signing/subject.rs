//! What an operation's statement binds in place of a plan id (issue 19): a
//! hash of what the job will do, read from the job's own spec — the routines
//! it names, the rollout it undoes, the version it restores, a disable's
//! `--revoke`, an adoption's reason, an emergency's reason. The operator's
//! CLI builds the same spec from the command line, so a controller that
//! sends `disable g` under an approval of `disable f`, or a rollback to
//! another version, is refused by the agent. The controller's own additions
//! (a rollback's `known_versions`, a second source keyed by the definitions'
//! hashes the zone's ledger holds) are not bound.

use super::action;
use crate::job::{AdoptSpec, JobKind};
use crate::operations::{RollbackScope, RollbackSpec, RollbackTarget, RoutineSelector};

/// The action and subject of a job that changes a database without a plan
/// (rollback, disable, enable, adopt); `None` for any other kind.
pub fn of_operation(kind: &JobKind) -> Option<(&'static str, String)> {
    let mut parts = Parts::default();
    let action = match kind {
        JobKind::Rollback(spec) => {
            rollback(&mut parts, spec);
            if spec.emergency.is_some() {
                action::EMERGENCY_ROLLBACK
            } else {
                action::ROLLBACK
            }
        }
        JobKind::Disable(spec) => {
            parts.selector(&spec.routines);
            parts.push(if spec.revoke { "revoke" } else { "rename" });
            action::DISABLE
        }
        JobKind::Enable(selector) => {
            parts.selector(selector);
            action::ENABLE
        }
        JobKind::Adopt(spec) => {
            adopt(&mut parts, spec);
            action::ADOPT
        }
        _ => return None,
    };
    Some((action, parts.hash(action)))
}

/// A fleet's rollback (issue 24): each member's job undoes that target's own
/// rollout, but the operator signed `rollback --rollout f-…`: the subject is
/// the job's spec with the fleet rollout in place of the target's.
pub fn of_fleet_operation(kind: &JobKind, fleet_rollout: &str) -> Option<(&'static str, String)> {
    match kind {
        JobKind::Rollback(spec) if matches!(spec.scope, RollbackScope::Rollout(_)) => {
            of_operation(&JobKind::Rollback(RollbackSpec {
                scope: RollbackScope::Rollout(fleet_rollout.to_owned()),
                target: spec.target.clone(),
                emergency: spec.emergency.clone(),
                known_versions: Vec::new(),
            }))
        }
        _ => None,
    }
}

fn rollback(parts: &mut Parts, spec: &RollbackSpec) {
    match &spec.scope {
        RollbackScope::Routines(selector) => {
            parts.push("routines");
            parts.selector(selector);
        }
        RollbackScope::Rollout(id) => {
            parts.push("rollout");
            parts.push(id);
        }
    }
    match &spec.target {
        RollbackTarget::Previous => parts.push("previous"),
        RollbackTarget::LedgerId(id) => {
            parts.push("ledger");
            parts.push(&id.to_string());
        }
        RollbackTarget::PlanId(plan) => {
            parts.push("plan");
            parts.push(&plan.to_ascii_lowercase());
        }
    }
    parts.push(spec.emergency.as_deref().unwrap_or_default());
}

fn adopt(parts: &mut Parts, spec: &AdoptSpec) {
    parts.push(&spec.routines.len().to_string());
    for selector in &spec.routines {
        parts.selector(selector);
    }
    parts.push(&spec.reason);
    parts.push(if spec.only_drifted {
        "only-drifted"
    } else {
        "all"
    });
}

/// Length-prefixed parts: no two specs encode alike.
#[derive(Default)]
struct Parts(Vec<u8>);

impl Parts {
    fn push(&mut self, part: &str) {
        self.0.extend_from_slice(&(part.len() as u64).to_be_bytes());
        self.0.extend_from_slice(part.as_bytes());
    }

    fn selector(&mut self, selector: &RoutineSelector) {
        self.push(selector.schema.as_deref().unwrap_or("*"));
        self.push(&selector.name);
        match &selector.arg_types {
            None => self.push("*"),
            Some(types) => {
                self.push(&types.len().to_string());
                for t in types {
                    self.push(t);
                }
            }
        }
    }

    fn hash(&self, action: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"pgrollout-operation-v2\n");
        hasher.update((action.len() as u64).to_be_bytes());
        hasher.update(action.as_bytes());
        hasher.update(&self.0);
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::DisableSpec;

    fn selector(name: &str) -> RoutineSelector {
        RoutineSelector {
            schema: None,
            name: name.into(),
            arg_types: None,
        }
    }

    fn rollback(target: RollbackTarget, emergency: Option<&str>) -> JobKind {
        JobKind::Rollback(RollbackSpec {
            scope: RollbackScope::Routines(selector("f")),
            target,
            emergency: emergency.map(str::to_owned),
            known_versions: Vec::new(),
        })
    }

    #[test]
    fn each_part_of_an_operation_changes_its_subject() {
        let subjects: Vec<String> = [
            rollback(RollbackTarget::Previous, None),
            rollback(RollbackTarget::LedgerId(3), None),
            rollback(RollbackTarget::PlanId("3f2a9c0d".into()), None),
            rollback(RollbackTarget::Previous, Some("down")),
            rollback(RollbackTarget::Previous, Some("down!")),
            JobKind::Disable(DisableSpec {
                routines: selector("f"),
                revoke: false,
            }),
            JobKind::Disable(DisableSpec {
                routines: selector("f"),
                revoke: true,
            }),
            JobKind::Disable(DisableSpec {
                routines: selector("g"),
                revoke: false,
            }),
            JobKind::Enable(selector("f")),
        ]
        .iter()
        .map(|kind| of_operation(kind).map(|(_, s)| s).unwrap_or_default())
        .collect();
        let distinct: std::collections::BTreeSet<&String> = subjects.iter().collect();
        assert_eq!(distinct.len(), subjects.len());
        assert_eq!(
            of_operation(&rollback(RollbackTarget::Previous, Some("x"))).map(|(a, _)| a),
            Some(action::EMERGENCY_ROLLBACK)
        );
        assert!(of_operation(&JobKind::AuditAnchors).is_none());
    }
}
