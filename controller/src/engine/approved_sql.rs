//! What runs in an environment is what was approved there (issue 13).
//!
//! In an environment that requires approval (`require_approval`, or an
//! `approval` or `stakeholder_signoff` gate), SQL from an operator's working
//! copy never runs: `smoke` and the watch probes run the smoke tests of the
//! plan deployed there, which the controller holds content-addressed, and
//! `check` and `perf` run there only as part of a deploy (its syntax gate and
//! after-deploy steps, after the approvals). Everywhere else a working copy's
//! SQL may run, in transactions the agent always rolls back.

use std::collections::BTreeMap;
use std::sync::Arc;

use pgrollout_shared::job::JobKind;
use pgrollout_shared::proto::Plan;
use pgrollout_shared::routine::{routines_from_wire, Routine};
use pgrollout_shared::signing::sources::SourcePlan;
use pgrollout_shared::watch::{WatchSampleSpec, WatchedName};
use prost::Message;

use super::error::EngineError;
use super::Controller;
use crate::config::{ControllerConfig, GateName};
use crate::store::{AuditEntry, StoreError};

/// How many of an environment's newest successful deploys are searched for a
/// routine: older versions were replaced long ago, and the search stays
/// bounded however long the controller has run.
const DEPLOYS_SEARCHED: usize = 200;

/// How many of a routine name's newest versions are searched for the one an
/// environment runs (a rollback restores a recent one).
const VERSIONS_SEARCHED: usize = 50;

/// Whether a deploy to `environment` needs people's approval: then no SQL but
/// an approved plan's runs there.
pub fn requires_approval(config: &ControllerConfig, environment: &str) -> bool {
    config.environments.get(environment).is_some_and(|e| {
        let gates = e.effective_gates();
        gates.contains(&GateName::Approval) || gates.contains(&GateName::StakeholderSignoff)
    })
}

/// A routine as a successful deploy left it, with where it came from.
pub struct Deployed {
    pub routine: Routine,
    pub rollout_id: String,
    pub plan_id: String,
    pub commit_sha: String,
    /// Every routine of that plan: sent with the smoke tests taken from it,
    /// so an agent with an `[approvals]` policy can recompute its plan id
    /// and check its own ledger (issue 19, `signing::sources`).
    pub plan: Arc<Vec<Routine>>,
}

/// The plans `deployed` routines come from, each once, whole.
pub fn sources_of<'a>(deployed: impl IntoIterator<Item = &'a Deployed>) -> Vec<SourcePlan> {
    let mut seen: Vec<&str> = Vec::new();
    let mut sources = Vec::new();
    for found in deployed {
        if !seen.contains(&found.plan_id.as_str()) {
            seen.push(&found.plan_id);
            sources.push(SourcePlan {
                routines: found.plan.as_ref().clone(),
            });
        }
    }
    sources
}

/// For each key, the routines matching it in the newest plan deployed to
/// `environment` that has any; keys nothing deployed matches are absent.
pub async fn deployed<K: Ord + Clone>(
    controller: &Controller,
    environment: &str,
    keys: &[K],
    key_of: impl Fn(&Routine) -> K,
) -> Result<BTreeMap<K, Vec<Deployed>>, StoreError> {
    let plans = controller
        .store
        .deployed_plans(environment, DEPLOYS_SEARCHED)
        .await?;
    let mut found: BTreeMap<K, Vec<Deployed>> = BTreeMap::new();
    for plan in &plans {
        if found.len() == keys.len() {
            break;
        }
        // Stored by this controller after validation: a plan that no longer
        // decodes is skipped (and said), never trusted partly.
        let routines = match Plan::decode(plan.content.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|p| routines_from_wire(p.routines).map_err(|e| e.to_string()))
        {
            Ok(routines) => routines,
            Err(error) => {
                tracing::error!(plan_id = %plan.plan_id, %error, "a stored plan does not decode; skipped");
                continue;
            }
        };
        let whole = Arc::new(routines.clone());
        // Keys this plan has, taken whole from this plan (all overloads of a
        // name come from the same deploy).
        let mut here: BTreeMap<K, Vec<Deployed>> = BTreeMap::new();
        for routine in routines {
            let key = key_of(&routine);
            if keys.contains(&key) && !found.contains_key(&key) {
                here.entry(key).or_default().push(Deployed {
                    routine,
                    rollout_id: plan.rollout_id.clone(),
                    plan_id: plan.plan_id.clone(),
                    commit_sha: plan.commit_sha.clone(),
                    plan: whole.clone(),
                });
            }
        }
        found.extend(here);
    }
    let rows: Vec<PlanRow<'_>> = plans
        .iter()
        .map(|p| PlanRow {
            rollout_id: &p.rollout_id,
            plan_id: &p.plan_id,
            commit_sha: &p.commit_sha,
            content: &p.content,
        })
        .collect();
    in_force(controller, environment, &rows, &mut found, &key_of).await?;
    Ok(found)
}

/// A deployed plan as the store returned it.
struct PlanRow<'a> {
    rollout_id: &'a str,
    plan_id: &'a str,
    commit_sha: &'a str,
    content: &'a [u8],
}

/// Issue 19: the routines of the plan *in force*, not of the newest plan
/// deployed. After a rollback an environment runs an older plan's version of
/// a routine (the agent's ledger names that plan as the routine's latest);
/// the store's index of what runs (`running_routines`, the definition's
/// hash) and of the versions received (`routine_versions`: which plan
/// deployed that hash) say which — and its routines are taken from that
/// plan, so a `smoke` or watch sample right after a rollback offers the
/// smoke tests the agent finds in force. A routine the index knows nothing
/// of (or dropped there) keeps the newest plan's: the agent says why not.
async fn in_force<K: Ord + Clone>(
    controller: &Controller,
    environment: &str,
    plans: &[PlanRow<'_>],
    found: &mut BTreeMap<K, Vec<Deployed>>,
    key_of: &impl Fn(&Routine) -> K,
) -> Result<(), StoreError> {
    let identities: Vec<String> = found
        .values()
        .flatten()
        .map(|d| d.routine.identity.to_string())
        .collect();
    if identities.is_empty() {
        return Ok(());
    }
    let running = controller
        .store
        .running_routines(environment, identities)
        .await?;
    let names: Vec<(Option<String>, String)> = found
        .values()
        .flatten()
        .map(|d| {
            (
                Some(d.routine.identity.schema.clone()),
                d.routine.identity.name.clone(),
            )
        })
        .collect();
    let versions = controller
        .store
        .indexed_versions(environment, names, VERSIONS_SEARCHED)
        .await?;
    // The plan in force of each routine whose running version is known.
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for row in running.iter().filter(|r| !r.sha256.is_empty()) {
        if let Some(version) = versions.iter().find(|v| v.definition_sha256 == row.sha256) {
            wanted.insert(row.identity.clone(), version.plan_id.clone());
        }
    }
    let stale: Vec<(K, String)> = found
        .iter()
        .filter_map(|(key, deployed)| {
            let first = deployed.first()?;
            let plan = wanted.get(&first.routine.identity.to_string())?;
            (*plan != first.plan_id).then(|| (key.clone(), plan.clone()))
        })
        .collect();
    for (key, plan_id) in stale {
        let Some(plan) = plans.iter().find(|p| p.plan_id == plan_id) else {
            continue; // older than the deploys searched: left as found
        };
        let Ok(routines) = Plan::decode(plan.content)
            .map_err(|e| e.to_string())
            .and_then(|p| routines_from_wire(p.routines).map_err(|e| e.to_string()))
        else {
            continue;
        };
        let whole = Arc::new(routines.clone());
        let here: Vec<Deployed> = routines
            .into_iter()
            .filter(|r| key_of(r) == key)
            .map(|routine| Deployed {
                routine,
                rollout_id: plan.rollout_id.to_owned(),
                plan_id: plan.plan_id.to_owned(),
                commit_sha: plan.commit_sha.to_owned(),
                plan: whole.clone(),
            })
            .collect();
        if !here.is_empty() {
            found.insert(key, here);
        }
    }
    Ok(())
}

/// The routines a `smoke` in `environment` (which requires approval) runs:
/// the deployed ones, provided the working copy's smoke tests are exactly
/// theirs, with the plans they come from; otherwise why not, said plainly.
pub async fn approved_smoke(
    controller: &Controller,
    environment: &str,
    requested: &[Routine],
) -> Result<(Vec<Routine>, Vec<SourcePlan>), String> {
    let identities: Vec<_> = requested.iter().map(|r| r.identity.clone()).collect();
    let deployed = deployed(controller, environment, &identities, |r| r.identity.clone())
        .await
        .map_err(|error| {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reading the deployed plans failed");
            "the controller could not read its store; see its log".to_owned()
        })?;
    let rule = format!(
        "{environment} requires approval, so only the smoke tests of the plan deployed there run there, \
         never a working copy's"
    );
    let mut approved = Vec::with_capacity(requested.len());
    let mut from = Vec::with_capacity(requested.len());
    for routine in requested {
        let Some(found) = deployed.get(&routine.identity).and_then(|d| d.first()) else {
            return Err(format!(
                "{rule}: nothing deployed to {environment} has {}; deploy it (its smoke tests run as part of \
                 the deploy, after its gates and approvals)",
                routine.identity
            ));
        };
        if found.routine.smoke_tests != routine.smoke_tests {
            return Err(format!(
                "{rule}: the smoke tests of {} in your working copy differ from those of plan {} deployed by \
                 rollout {} (commit {}); run `smoke` from that commit, or deploy your change (it passes \
                 {environment}'s gates and approvals)",
                routine.identity,
                short(&found.plan_id),
                found.rollout_id,
                if found.commit_sha.is_empty() {
                    "unknown"
                } else {
                    short(&found.commit_sha)
                }
            ));
        }
        approved.push(found.routine.clone());
        from.push(found);
    }
    Ok((approved, sources_of(from)))
}

/// Audits a refusal of SQL in an environment that requires approval and
/// returns it as the operator's error (exit 1: nothing ran).
pub async fn refuse(
    controller: &Controller,
    actor: &str,
    action: &str,
    environment: &str,
    procedure: &str,
    message: String,
) -> EngineError {
    controller
        .audit(AuditEntry {
            actor: actor.to_owned(),
            action: action.to_owned(),
            outcome: "refused".into(),
            environment: Some(environment.to_owned()),
            procedure: Some(procedure.to_owned()),
            details: message.clone(),
            ..Default::default()
        })
        .await;
    EngineError::Refused(message)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A `smoke` rollout as it may run: unchanged where no approval is needed;
/// in an environment that requires approval, the deployed routines in place
/// of the working copy's, or the audited refusal.
pub async fn restrict_smoke(
    controller: &Controller,
    request: &mut super::rollout::RolloutRequest,
) -> Result<(), EngineError> {
    if !requires_approval(&controller.config, &request.environment) {
        return Ok(());
    }
    let JobKind::Smoke { routines, sources } = &mut request.kind else {
        return Ok(());
    };
    match approved_smoke(controller, &request.environment, routines).await {
        Ok((approved, from)) => {
            *routines = approved;
            *sources = from;
            Ok(())
        }
        Err(message) => Err(refuse(
            controller,
            &request.actor,
            "smoke.refused",
            &request.environment,
            &request.plan.label,
            message,
        )
        .await),
    }
}

/// The probes of a watch sample in `environment`: where approval is required,
/// the routines deployed there under the watched names — looked up at each
/// sample, so the probes follow the deploys — with the plans they come from,
/// and a name nothing deployed has is not probed; elsewhere, `stored` (the
/// creator's working copy) and no plan.
pub async fn watch_probes(
    controller: &Controller,
    environment: &str,
    names: &[WatchedName],
    stored: Vec<Routine>,
) -> Result<(Vec<Routine>, Vec<SourcePlan>), StoreError> {
    if !requires_approval(&controller.config, environment) {
        return Ok((stored, Vec::new()));
    }
    let found = deployed(controller, environment, names, |r| WatchedName {
        schema: r.identity.schema.clone(),
        name: r.identity.name.clone(),
    })
    .await?;
    let sources = sources_of(found.values().flatten());
    let probes = found
        .into_values()
        .flatten()
        .map(|deployed| deployed.routine)
        .collect();
    Ok((probes, sources))
}

/// The probes `alert create` gives a new watch in `environment` with the
/// plans they come from, and, where approval is required, a note saying where they come from (the working
/// copy's smoke tests never run there).
pub async fn new_watch_probes(
    controller: &Controller,
    environment: &str,
    routines: &[Routine],
) -> Result<(Vec<Routine>, Vec<SourcePlan>, Option<String>), EngineError> {
    if !requires_approval(&controller.config, environment) {
        return Ok((routines.to_vec(), Vec::new(), None));
    }
    let spec = WatchSampleSpec::for_routines(String::new(), routines.to_vec());
    let (probes, sources) = watch_probes(controller, environment, &spec.names, Vec::new())
        .await
        .map_err(EngineError::store("read its store"))?;
    let unprobed: Vec<String> = spec
        .names
        .iter()
        .filter(|n| {
            !probes
                .iter()
                .any(|p| p.identity.schema == n.schema && p.identity.name == n.name)
        })
        .map(ToString::to_string)
        .collect();
    let mut note = format!(
        "{environment} requires approval: the probes are the smoke tests of the plan deployed there (looked \
         up at every sample), never your working copy's"
    );
    if !unprobed.is_empty() {
        note.push_str(&format!(
            "; nothing deployed there has {}, so the watch has no probe for it until a deploy brings one",
            unprobed.join(", ")
        ));
    }
    Ok((probes, sources, Some(note)))
}
