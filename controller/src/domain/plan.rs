//! A plan as the engine and the store handle it: every routine validated
//! (`pgrollout_shared::routine::Routine`). The edge builds it once from the
//! wire (`api/plan_input.rs`, where the plan id is recomputed from the wire
//! routines and compared); the store rebuilds it from a stored blob and
//! writes it back as one (`to_wire`). The CLI builds its wire plan from the
//! same routine types (`plan::build_plan`), so for every plan it sends the
//! way back to the wire is byte for byte what it sent.

use pgrollout_shared::proto;
use pgrollout_shared::routine::{routines_from_wire, InvalidField, Routine};

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Hex SHA-256 of the routines' canonical encoding (`plan::plan_id`);
    /// for a rollback, disable, enable or history, its operation's id.
    pub plan_id: String,
    pub commit_sha: String,
    pub label: String,
    /// Sorted by identity; empty for an operation (rollback and the like).
    pub routines: Vec<Routine>,
}

impl Plan {
    /// A plan without routines: the record an operation (rollback, disable,
    /// enable, history) keeps in a plan's place.
    pub fn operation(plan_id: String, label: String) -> Plan {
        Plan {
            plan_id,
            commit_sha: String::new(),
            label,
            routines: Vec::new(),
        }
    }

    /// The wire form: what an offer carries and the store keeps.
    pub fn to_wire(&self) -> proto::Plan {
        proto::Plan {
            plan_id: self.plan_id.clone(),
            commit_sha: self.commit_sha.clone(),
            label: self.label.clone(),
            routines: self.routines.iter().cloned().map(Into::into).collect(),
        }
    }
}

/// Converts every routine; a plan to deploy has at least one (an
/// operation's record is built here, never received). The plan id is not
/// recomputed: the edge compares it with the wire routines before
/// converting, and a stored plan was checked when it arrived.
impl TryFrom<proto::Plan> for Plan {
    type Error = InvalidField;

    fn try_from(wire: proto::Plan) -> Result<Self, Self::Error> {
        Ok(Plan {
            routines: routines_from_wire(wire.routines)?,
            plan_id: wire.plan_id,
            commit_sha: wire.commit_sha,
            label: wire.label,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_the_cli_builds_goes_to_the_domain_and_back_byte_for_byte() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/project");
        let project = crate::project::Project::load(&root).expect("the sample project");
        let routines = project.routines().to_vec();
        assert!(routines.len() > 1, "a plan of several routines");
        let wire = crate::plan::build_plan(routines, "all", "0123abc");
        let domain = Plan::try_from(wire.clone()).expect("a valid plan");
        assert_eq!(domain.routines.len(), wire.routines.len());
        assert_eq!(domain.to_wire(), wire);
        assert_eq!(
            crate::plan::plan_id(&domain.to_wire().routines),
            wire.plan_id
        );
    }

    #[test]
    fn an_operation_is_stored_without_routines_but_none_is_received_so() {
        let operation = Plan::operation("op-1".into(), "rollback f".into());
        let wire = operation.to_wire();
        assert_eq!((wire.plan_id.as_str(), wire.routines.len()), ("op-1", 0));
        let error = Plan::try_from(wire).expect_err("a plan to deploy has routines");
        assert_eq!(error.field, "routines");
    }

    #[test]
    fn an_invalid_routine_is_refused_with_its_field() {
        let wire = proto::Plan {
            plan_id: "x".into(),
            routines: vec![proto::Routine {
                schema: "public".into(),
                name: "f".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let error = Plan::try_from(wire).expect_err("no CREATE statement");
        assert!(error.to_string().contains("create_sql"), "{error}");
    }
}
