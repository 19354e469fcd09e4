//! The performance baseline (issue 23): the version of each routine a target
//! environment (PROD) runs now, from the controller's record of what
//! succeeded there — the newest successful deploy, rollback, disable or
//! enable result that names the routine. The QA probe times that version as
//! the OLD definition (`perf_targets`), and PROD's gate accepts only a probe
//! that timed the version PROD still runs, so a series of deploys that each
//! look fine against QA's previous version cannot ratchet PROD slower.

use std::collections::HashMap;

use pgrollout_shared::perf_target::{PerfBaseline, PerfTarget};
use pgrollout_shared::proto::{self, JobResult, Outcome, Plan};
use prost::Message;

use crate::config::{ControllerConfig, GateName};
use crate::store::{Store, StoreError};

/// How many of an environment's newest job results are searched.
const RESULTS_SEARCHED: usize = 2_000;

/// What a target runs of one routine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// SHA-256 of the definition as the target's catalog holds it.
    pub sha256: String,
    /// The CREATE statement of that version, from a plan that deployed it;
    /// `None` when no plan the controller holds did (say, a rollback to a
    /// version deployed by hand).
    pub create_sql: Option<String>,
    /// For reports: `prod's version (plan 3f2a…, rollout r-…)`.
    pub source: String,
}

/// What `environment` runs now of each of `identities` (`schema.name(types)`);
/// a routine missing from the map runs nowhere there as far as the
/// controller knows (never deployed, or dropped by a rollback).
pub async fn running_versions(
    store: &Store,
    environment: &str,
    identities: &[String],
) -> Result<HashMap<String, Running>, StoreError> {
    let results = store.results_in(environment, RESULTS_SEARCHED).await?;
    let decoded: Vec<(String, Plan, JobResult)> = results
        .into_iter()
        .filter_map(|stored| {
            let plan = Plan::decode(stored.plan.as_slice()).ok()?;
            let result = JobResult::decode(stored.result.as_slice()).ok()?;
            (result.outcome() == Outcome::Succeeded).then_some((stored.rollout_id, plan, result))
        })
        .collect();
    let mut running = HashMap::new();
    for identity in identities {
        // Newest first: the first result that names the routine says what
        // runs now.
        let latest = decoded.iter().find_map(|(rollout_id, plan, result)| {
            if let Some(applied) = result.applied.iter().find(|a| &a.identity == identity) {
                return Some((applied.new_sha256.clone(), rollout_id, plan));
            }
            result
                .restored
                .iter()
                .find(|r| same_routine(&r.identity, identity))
                .map(|r| (r.sha256.clone(), rollout_id, plan))
        });
        let Some((sha256, rollout_id, plan)) = latest else {
            continue;
        };
        if sha256.is_empty() {
            continue; // dropped there
        }
        let create_sql = statement_of(&decoded, identity, &sha256);
        running.insert(
            identity.clone(),
            Running {
                source: format!(
                    "{environment}'s version (plan {}, rollout {rollout_id})",
                    short(&plan.plan_id)
                ),
                sha256,
                create_sql,
            },
        );
    }
    Ok(running)
}

/// The perf targets of a probe run in `environment`: every environment
/// promoted from it whose `performance` gate will read the probe, with the
/// versions it runs of `identities`.
pub async fn perf_targets(
    config: &ControllerConfig,
    store: &Store,
    environment: &str,
    identities: &[String],
) -> Result<Vec<PerfTarget>, StoreError> {
    let mut targets = Vec::new();
    for (name, target) in &config.environments {
        if target.promote_from.as_deref() != Some(environment)
            || !target.effective_gates().contains(&GateName::Performance)
        {
            continue;
        }
        let running = running_versions(store, name, identities).await?;
        let mut baselines: Vec<PerfBaseline> = running
            .into_iter()
            .map(|(routine, version)| PerfBaseline {
                routine,
                definition_sha256: version.sha256,
                create_sql: version.create_sql,
                source: version.source,
            })
            .collect();
        baselines.sort_by(|a, b| a.routine.cmp(&b.routine));
        targets.push(PerfTarget {
            environment: name.clone(),
            threshold_percent: target.performance_threshold_percent,
            baselines,
        });
    }
    Ok(targets)
}

/// The CREATE statement of the version of `identity` whose definition hash
/// is `sha256`, from any plan whose deploy recorded that hash.
fn statement_of(
    decoded: &[(String, Plan, JobResult)],
    identity: &str,
    sha256: &str,
) -> Option<String> {
    decoded.iter().find_map(|(_, plan, result)| {
        result
            .applied
            .iter()
            .any(|a| a.identity == identity && a.new_sha256 == sha256)
            .then(|| {
                plan.routines
                    .iter()
                    .find(|r| identity_of(r) == identity)
                    .map(|r| r.create_sql.clone())
            })
            .flatten()
    })
}

/// `schema.name(argument types)`, as the plan and the agent write it.
pub fn identity_of(routine: &proto::Routine) -> String {
    format!(
        "{}.{}({})",
        routine.schema,
        routine.name,
        routine.arg_types.join(", ")
    )
}

/// A restore names routines by `regprocedure` text, which leaves out the
/// schema when it is on the search path (`public`).
fn same_routine(regprocedure: &str, identity: &str) -> bool {
    let bare = |s: &str| s.strip_prefix("public.").unwrap_or(s).replace('"', "");
    regprocedure == identity || bare(regprocedure) == bare(identity)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::same_routine;

    #[test]
    fn a_restore_names_a_public_routine_without_its_schema() {
        assert!(same_routine(
            "addarc(text, text)",
            "public.addarc(text, text)"
        ));
        assert!(same_routine(
            "public.addarc(text, text)",
            "public.addarc(text, text)"
        ));
        assert!(!same_routine(
            "ops.addarc(text, text)",
            "public.addarc(text, text)"
        ));
        assert!(!same_routine("addarc(text)", "public.addarc(text, text)"));
    }
}
