//! Which targets a fleet environment selects now, from what connected agents
//! announce (here and, on a shared store, to the other live controllers) — for the rollout's waves (`mod.rs`) and for the syntax gate's
//! dry run on the canary (`rollout.rs`), which must not import the driver:
//! this file imports neither.

use super::waves;
use crate::engine::error::EngineError;
use crate::engine::Controller;

/// The targets `environment` (named `name`) selects among those connected
/// agents announce now — to this controller, or to any other live
/// controller of a shared store (issue 18: a fleet started on one
/// controller reaches agents on all of them); refused when it selects none.
pub async fn members_now(
    controller: &Controller,
    environment: &crate::config::Environment,
    name: &str,
) -> Result<Vec<waves::Member>, EngineError> {
    let agents = controller.registry.all();
    let elsewhere = other_controllers_agents(controller).await?;
    let announced: Vec<waves::Announced<'_>> = agents
        .iter()
        .filter(|a| !a.expired() && !a.draining.load(std::sync::atomic::Ordering::Relaxed))
        .flat_map(|a| {
            a.targets.iter().map(|t| waves::Announced {
                zone: &a.zone,
                target: &t.name,
                labels: &t.labels,
            })
        })
        .chain(elsewhere.iter().flat_map(|s| {
            s.targets.iter().map(|t| waves::Announced {
                zone: &s.zone,
                target: &t.name,
                labels: &t.labels,
            })
        }))
        .collect();
    // An agent that just moved may be in both lists: `resolve` counts each
    // target once.
    let members = waves::resolve(environment, &announced);
    if members.is_empty() {
        return Err(EngineError::Refused(format!(
            "environment {} selects no target now: no connected agent announces a target{}{}; nothing was deployed \
             (see `pgrollout agents`)",
            name,
            if environment.zones.is_empty() {
                String::new()
            } else {
                format!(" in zone(s) {}", environment.zones.join(", "))
            },
            if environment.labels.is_empty() {
                String::new()
            } else {
                let labels: Vec<String> =
                    environment.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(" labelled {}", labels.join(", "))
            }
        )));
    }
    Ok(members)
}

/// The agents whose streams other live controllers hold, from the store
/// (none on an unshared store). Their draining and certificate expiry are
/// known only to their own controller, which does not offer such an agent
/// a job: the job waits for it and fails at the accept timeout.
async fn other_controllers_agents(
    controller: &Controller,
) -> Result<Vec<crate::store::LiveStream>, EngineError> {
    if !controller.store.shared_by_controllers() {
        return Ok(Vec::new());
    }
    let Some(me) = controller.identity.get() else {
        return Ok(Vec::new());
    };
    controller
        .store
        .live_agent_streams(
            &me.id,
            pgrollout_shared::job::now_unix_ms(),
            crate::engine::identity::dead_after_ms(),
        )
        .await
        .map_err(EngineError::store(
            "read the agents connected to other controllers",
        ))
}

/// Issue 24: where a fleet's syntax gate dry-runs — its first wave's first
/// target (the canary), as the waves would place it now: the gate judges the
/// database the rollout changes first, before any target is changed.
pub async fn dry_run_placement(
    controller: &Controller,
    name: &str,
) -> Result<(String, String), EngineError> {
    let environment = controller
        .config
        .environments
        .get(name)
        .ok_or_else(|| EngineError::NotFound(format!("no environment {name}")))?;
    let members = members_now(controller, environment, name).await?;
    let wave_of = waves::plan(
        &members,
        &environment.rollout.clone().unwrap_or_default(),
        controller.config.deployment.max_concurrent,
    )
    .map_err(EngineError::Refused)?;
    let first = members
        .iter()
        .zip(&wave_of)
        .min_by_key(|(_, wave)| **wave)
        .map(|(member, _)| member)
        .ok_or_else(|| EngineError::Refused(format!("environment {name} selects no target now")))?;
    Ok((first.zone.clone(), first.target.clone()))
}

/// Issue 19 with 24: the members a fleet's statements are signed for
/// (`zone/target`, see `signing::fleet`), and the plan id of the fleet
/// rollout when one is named: a `resume` or `rollback --rollout f-…` signs
/// the fleet rollout's recorded members; a deploy, the members now.
pub async fn for_signing(
    controller: &Controller,
    environment: &str,
    fleet_rollout: &str,
) -> Result<(Vec<String>, String), EngineError> {
    if !fleet_rollout.is_empty() {
        let (record, targets) = controller
            .store
            .fleet(fleet_rollout)
            .await
            .map_err(EngineError::store("read the fleet rollout"))?
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "no fleet rollout {fleet_rollout}; see `pgrollout rollouts`"
                ))
            })?;
        if record.environment != environment {
            return Err(EngineError::Invalid(format!(
                "fleet rollout {fleet_rollout} ran in environment {}, not {environment}",
                record.environment
            )));
        }
        let members = targets
            .iter()
            .map(|t| pgrollout_shared::signing::fleet::member(&t.zone, &t.target))
            .collect();
        return Ok((members, record.plan_id));
    }
    let settings = controller
        .config
        .environments
        .get(environment)
        .ok_or_else(|| EngineError::NotFound(format!("no environment {environment}")))?;
    let members = members_now(controller, settings, environment)
        .await?
        .iter()
        .map(|m| pgrollout_shared::signing::fleet::member(&m.zone, &m.target))
        .collect();
    Ok((members, String::new()))
}

/// A fleet's signed jobs carry the members their statements were signed
/// for: `members` (the rollout's set) when the statements name a fleet.
/// Refused when the statements name another set than this one (a target
/// joined or left since they were signed): every agent would refuse it.
pub fn attach(
    approvals: &mut pgrollout_shared::job::SignedApprovals,
    members: Vec<String>,
) -> Result<(), EngineError> {
    use pgrollout_shared::signing::{fleet, Statement};
    if approvals.signatures.is_empty() {
        return Ok(());
    }
    let set = fleet::target_of(&members);
    let signed_for = approvals
        .signatures
        .iter()
        .filter_map(|s| Statement::decode(&s.statement).ok())
        .find(|s| s.action != pgrollout_shared::signing::action::RESUME)
        .map(|s| s.target);
    if let Some(signed_for) = signed_for {
        if signed_for != set {
            return Err(EngineError::Refused(format!(
                "the request's statements were signed for {signed_for}, but the fleet's targets now are {} \
                 ({}): a target joined or left since; nothing was deployed — request it again so the \
                 operators sign this set",
                set,
                members.join(", ")
            )));
        }
    }
    approvals.fleet_members = members;
    Ok(())
}
