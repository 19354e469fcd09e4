//! Which targets a fleet environment selects now, from what connected agents
//! announce — for the rollout's waves (`mod.rs`) and for the syntax gate's
//! dry run on the canary (`rollout.rs`), which must not import the driver:
//! this file imports neither.

use super::waves;
use crate::engine::error::EngineError;
use crate::engine::Controller;

/// The targets `environment` (named `name`) selects among those connected
/// agents announce now; refused when it selects none.
pub fn members_now(
    controller: &Controller,
    environment: &crate::config::Environment,
    name: &str,
) -> Result<Vec<waves::Member>, EngineError> {
    let agents = controller.registry.all();
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
        .collect();
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

/// Issue 24: where a fleet's syntax gate dry-runs — its first wave's first
/// target (the canary), as the waves would place it now: the gate judges the
/// database the rollout changes first, before any target is changed.
pub fn dry_run_placement(
    controller: &Controller,
    name: &str,
) -> Result<(String, String), EngineError> {
    let environment = controller
        .config
        .environments
        .get(name)
        .ok_or_else(|| EngineError::NotFound(format!("no environment {name}")))?;
    let members = members_now(controller, environment, name)?;
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
