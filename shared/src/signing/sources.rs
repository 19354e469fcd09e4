//! Smoke jobs and watch probes run SQL of a plan (issue 19, item 4): the
//! smoke tests of routines deployed to the target, in a transaction the agent
//! rolls back. What escapes the rollback (a sequence's `nextval`, `dblink`,
//! the time spent, what a SELECT reads) still happens, so an agent with an
//! `[approvals]` policy runs such SQL only when it is a deployed plan's.
//!
//! The job carries, besides the routines whose tests it runs, the plans they
//! are taken from, whole ([`SourcePlan`]). Here, before anything connects:
//! each plan's id is recomputed from its routines, and each routine run must
//! be found, byte for byte (statement, grants, smoke tests), in one of them.
//! That gives a [`Claim`] per routine: "this is the routine of plan P". The
//! agent then checks each claim in its own target's ledger (the latest row of
//! the routine names plan P) in the transaction the tests run in — a plan id
//! the ledger holds is one the agent itself deployed there, after verifying
//! its signatures, and only the newest is the state in force.

use std::collections::BTreeMap;

use super::verify::Refusal;
use crate::plan_id::plan_id_of_job;
use crate::proto;
use crate::routine::{routines_from_wire, InvalidField, Routine, RoutineIdentity};

/// A deployed plan as a smoke or watch job carries it: every routine, so the
/// agent can recompute its plan id.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcePlan {
    pub routines: Vec<Routine>,
}

/// The plans of a job's wire form, validated as any plan's routines.
pub fn sources_from_wire(wire: Vec<proto::SourcePlan>) -> Result<Vec<SourcePlan>, InvalidField> {
    wire.into_iter()
        .enumerate()
        .map(|(index, plan)| {
            routines_from_wire(plan.routines)
                .map(|routines| SourcePlan { routines })
                .map_err(|e| InvalidField {
                    field: format!("source_plans[{index}].{}", e.field),
                    reason: e.reason,
                })
        })
        .collect()
}

impl From<SourcePlan> for proto::SourcePlan {
    fn from(plan: SourcePlan) -> Self {
        proto::SourcePlan {
            routines: plan.routines.into_iter().map(Into::into).collect(),
        }
    }
}

/// A routine whose SQL a job runs, and the plan it is found unchanged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub routine: RoutineIdentity,
    /// The routine's declared search path, which its argument types were
    /// written for (the agent resolves them with it).
    pub search_path: Vec<String>,
    pub plan_id: String,
}

/// One claim per routine of `run`, or why it is not a deployed plan's. A
/// routine without smoke tests is claimed too (the job checks that it
/// exists): the rule is the simplest to state — every routine a smoke job or
/// a watch probe names is one of a plan in force.
pub fn claims(what: &str, run: &[Routine], sources: &[SourcePlan]) -> Result<Vec<Claim>, Refusal> {
    // Each plan hashed once and indexed by identity: a job of a thousand
    // routines is checked in n log n, not n².
    let hashed: Vec<(String, BTreeMap<&RoutineIdentity, &Routine>)> = sources
        .iter()
        .map(|plan| {
            let by_identity = plan.routines.iter().map(|r| (&r.identity, r)).collect();
            (plan_id_of_job(&plan.routines), by_identity)
        })
        .collect();
    let mut claims = Vec::with_capacity(run.len());
    for routine in run {
        let found = hashed
            .iter()
            .find(|(_, plan)| plan.get(&routine.identity) == Some(&routine));
        let Some((plan_id, _)) = found else {
            let why = if hashed
                .iter()
                .any(|(_, plan)| plan.contains_key(&routine.identity))
            {
                "differs from the routine of that name in every plan the job carries"
            } else {
                "is in no plan the job carries"
            };
            return Err(Refusal(format!(
                "{}, whose smoke tests {what} runs, {why}: only the smoke tests of a plan deployed to \
                 this target run here",
                routine.identity
            )));
        };
        claims.push(Claim {
            routine: routine.identity.clone(),
            search_path: routine.search_path.clone(),
            plan_id: plan_id.clone(),
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routine::{RoutineKind, SmokeTest};
    use std::time::Duration;

    fn routine(name: &str, call: &str) -> Routine {
        Routine {
            identity: RoutineIdentity {
                schema: "public".into(),
                name: name.into(),
                arg_types: vec![],
            },
            kind: RoutineKind::Function,
            create_sql: format!(
                "CREATE FUNCTION public.{name}() RETURNS int LANGUAGE sql AS 'select 1'"
            ),
            companion_sql: vec![],
            grants: vec![],
            smoke_tests: vec![SmokeTest {
                name: "t".into(),
                call_sql: call.into(),
                expect_columns: vec![],
                max_duration: Duration::from_secs(1),
                allow_warnings: false,
                search_path: vec![],
            }],
            source_path: format!("procedures/{name}.sql"),
            depends_on: vec![],
            perf_probe: None,
            pgtap: None,
            source_line: 0,
            search_path: vec![],
            retire: None,
        }
    }

    #[test]
    fn a_routine_claims_the_plan_it_is_found_unchanged_in() {
        let f = routine("f", "SELECT f()");
        let g = routine("g", "SELECT g()");
        let plan = SourcePlan {
            routines: vec![g.clone(), f.clone()],
        };
        let claimed = claims(
            "this smoke job",
            std::slice::from_ref(&f),
            std::slice::from_ref(&plan),
        )
        .expect("claimed");
        assert_eq!(
            claimed,
            [Claim {
                routine: f.identity.clone(),
                search_path: f.search_path.clone(),
                plan_id: plan_id_of_job(&plan.routines),
            }]
        );
        // Another call under the same routine: not the plan's SQL.
        let forged = routine("f", "SELECT * FROM secrets");
        let refused =
            claims("this smoke job", &[forged], std::slice::from_ref(&plan)).expect_err("refused");
        assert!(refused.0.contains("differs from the routine"), "{refused}");
        // A routine no plan has.
        let other = routine("h", "SELECT h()");
        let refused = claims("this smoke job", &[other], &[plan]).expect_err("refused");
        assert!(
            refused.0.contains("is in no plan the job carries"),
            "{refused}"
        );
        let refused = claims("this smoke job", &[f], &[]).expect_err("refused");
        assert!(refused.0.contains("is in no plan"), "{refused}");
    }
}
