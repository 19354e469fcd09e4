//! The performance baseline (issue 23): the version of each routine a target
//! environment (PROD) runs now, from the controller's record of what
//! succeeded there — the newest successful deploy, rollback, disable or
//! enable result that names the routine. The QA probe times that version as
//! the OLD definition (`perf_targets`), and PROD's gate accepts only a probe
//! that timed the version PROD still runs, so a series of deploys that each
//! look fine against QA's previous version cannot ratchet PROD slower.

use std::collections::HashMap;

use pgrollout_shared::perf_target::{PerfBaseline, PerfTarget};
use pgrollout_shared::proto;
use prost::Message;

use crate::config::{ControllerConfig, GateName};
use crate::store::{Store, StoreError};

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
/// controller knows (never deployed, or dropped by a rollback). Read from
/// the store's index of what each environment runs (`running_routines`),
/// kept as results are recorded: its cost follows the routines asked about,
/// not the environment's history.
pub async fn running_versions(
    store: &Store,
    environment: &str,
    identities: &[String],
) -> Result<HashMap<String, Running>, StoreError> {
    let found = store
        .running_routines(environment, identities.to_vec())
        .await?;
    let mut running = HashMap::new();
    for row in found {
        if row.sha256.is_empty() {
            continue; // dropped there
        }
        // The CREATE statement of that version, from a plan that deployed it.
        let create_sql = row
            .routine
            .and_then(|bytes| proto::Routine::decode(bytes.as_slice()).ok())
            .filter(|routine| identity_of(routine) == row.identity)
            .map(|routine| routine.create_sql);
        running.insert(
            row.identity,
            Running {
                source: format!(
                    "{environment}'s version (plan {}, rollout {})",
                    short(&row.plan_id),
                    row.rollout_id
                ),
                sha256: row.sha256,
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

/// `schema.name(argument types)`, as the plan and the agent write it.
pub fn identity_of(routine: &proto::Routine) -> String {
    format!(
        "{}.{}({})",
        routine.schema,
        routine.name,
        routine.arg_types.join(", ")
    )
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use crate::store::routine_key;

    /// A restore names routines by `regprocedure` text, which leaves out the
    /// schema when it is on the search path (`public`): both name one key.
    #[test]
    fn a_restore_names_a_public_routine_without_its_schema() {
        let same = |a: &str, b: &str| routine_key(a) == routine_key(b);
        assert!(same("addarc(text, text)", "public.addarc(text, text)"));
        assert!(same(
            "public.addarc(text, text)",
            "public.addarc(text, text)"
        ));
        assert!(!same("ops.addarc(text, text)", "public.addarc(text, text)"));
        assert!(!same("addarc(text)", "public.addarc(text, text)"));
    }
}
