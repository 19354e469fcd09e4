//! Issue 24: an environment that is a fleet of targets. One plan, one fleet
//! rollout id (`f-…`), one trace and one approval for the whole set (the
//! gates were judged once, per environment, before this is reached); each
//! target then runs the ordinary deploy job (`rollout::start_on`: its own
//! rollout row, job and ledger rows, all with the same plan id), wave after
//! wave (`waves.rs`, driven by `drive.rs`), and the set, its waves and each
//! target's state are recorded (`store/fleets.rs`) so `status`, `resume` and
//! `rollback --rollout` work from the store, across restarts.

pub mod drive;
pub mod members;
pub mod policy;
pub mod waves;

pub use policy::Policy;

use std::sync::Arc;

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{rollout_update, RolloutStarted, RolloutUpdate};
use tokio::sync::mpsc;

use super::error::EngineError;
use super::rollout::RolloutRequest;
use super::updates::{UpdateSender, Updates};
use super::{new_id, Controller};
use crate::store::{fleet_state, AuditEntry, FleetRecord, FleetTargetRow};

/// A deploy to a fleet environment (`engine::launch` sends it here): the
/// set resolved now, its waves planned and recorded, and driven.
pub async fn start(
    controller: Arc<Controller>,
    request: RolloutRequest,
) -> Result<Updates, EngineError> {
    begin(controller, request).await
}

/// Resolves the set now, plans its waves, records them, and drives them.
async fn begin(
    controller: Arc<Controller>,
    mut request: RolloutRequest,
) -> Result<Updates, EngineError> {
    let environment = controller
        .config
        .environments
        .get(&request.environment)
        .cloned()
        .ok_or_else(|| EngineError::NotFound(format!("no environment {}", request.environment)))?;
    let members = members::members_now(&controller, &environment, &request.environment).await?;
    // Signed for a fleet (issue 19): each target's job carries the members.
    members::attach(&mut request.approvals, member_names(&members))?;
    let rollout_settings = environment.rollout.clone().unwrap_or_default();
    let wave_of = waves::plan(
        &members,
        &rollout_settings,
        controller.config.deployment.max_concurrent,
    )
    .map_err(EngineError::Refused)?;
    let fleet_id = new_id("f");
    let now = now_unix_ms();
    let record = FleetRecord {
        id: fleet_id.clone(),
        environment: request.environment.clone(),
        plan_id: request.plan.plan_id.clone(),
        actor: request.actor.clone(),
        trace_id: request.trace.trace_id.clone(),
        policy: request.fleet_policy.as_str().to_owned(),
        state: fleet_state::RUNNING.to_owned(),
        created_at: now,
    };
    let rows: Vec<FleetTargetRow> = members
        .iter()
        .zip(&wave_of)
        .enumerate()
        .map(|(position, (member, wave))| FleetTargetRow {
            position: position as u32,
            zone: member.zone.clone(),
            target: member.target.clone(),
            wave: *wave,
            state: fleet_state::PENDING.to_owned(),
            rollout_id: None,
            exit_code: None,
            message: String::new(),
        })
        .collect();
    let store_error = EngineError::store("record the fleet rollout");
    let in_flight = controller.drain.enter()?;
    controller
        .store
        .save_plan(&request.plan, now)
        .await
        .map_err(store_error)?;
    controller
        .store
        .create_fleet(&record, &rows)
        .await
        .map_err(store_error)?;
    record_driver(&controller, &fleet_id).await;
    let wave_count = wave_of.iter().max().map_or(0, |w| w + 1) - u32::from(!wave_of.contains(&0));
    controller
        .audit(AuditEntry {
            actor: request.actor.clone(),
            action: "fleet.started".into(),
            outcome: "ok".into(),
            rollout_id: Some(fleet_id.clone()),
            environment: Some(request.environment.clone()),
            procedure: Some(request.plan.label.clone()),
            trace_id: Some(request.trace.trace_id.clone()),
            details: format!(
                "plan {} to {} target(s) in {wave_count} wave(s), on failure {}: {}",
                request.plan.plan_id,
                members.len(),
                request.fleet_policy.as_str(),
                waves::list(&members)
            ),
        })
        .await;
    let (out, receiver) = started_updates(RolloutStarted {
        rollout_id: fleet_id.clone(),
        job_id: String::new(),
        environment: request.environment.clone(),
        zone: zones_of(members.iter().map(|m| m.zone.as_str())),
        agent_name: format!("{} target(s), {wave_count} wave(s)", members.len()),
        trace_id: request.trace.trace_id.clone(),
        actor: request.actor.clone(),
        started_at_unix_ms: now,
        gates: request.gates.clone(),
        order: request.order.clone(),
        fleet_targets: members.len() as u32,
    })
    .await;
    tokio::spawn(async move {
        drive::run(controller, fleet_id, request, out).await;
        drop(in_flight);
    });
    Ok(receiver)
}

/// `pgrollout resume f-…`: a halted fleet rollout goes on with its targets
/// that did not succeed (untouched, or failed and rolled back by their own
/// job), with the same plan and job kind, claimed once.
pub async fn resume(
    controller: Arc<Controller>,
    fleet_id: &str,
    actor: &str,
    agent_wait: std::time::Duration,
    signed_resume: Vec<pgrollout_shared::proto::SignedStatement>,
) -> Result<Updates, EngineError> {
    let store_error = EngineError::store("read the fleet rollout");
    drive::refresh(&controller, fleet_id).await;
    let (record, targets) = controller
        .store
        .fleet(fleet_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            EngineError::NotFound(format!(
                "no fleet rollout {fleet_id}; see `pgrollout rollouts`"
            ))
        })?;
    if record.state != fleet_state::HALTED {
        return Err(EngineError::Refused(format!(
            "fleet rollout {fleet_id} is {}, not halted: only a halted fleet rollout resumes",
            record.state
        )));
    }
    if let Some(doubt) = targets
        .iter()
        .find(|t| t.state == crate::store::state::UNKNOWN)
    {
        return Err(EngineError::Refused(format!(
            "target {}/{} of {fleet_id} is unknown (rollout {}): settle it first with `pgrollout retry` or \
             `pgrollout resolve`, then resume",
            doubt.zone,
            doubt.target,
            doubt.rollout_id.as_deref().unwrap_or("-")
        )));
    }
    let mut request = drive::request_of(&controller, &record, &targets, actor, agent_wait).await?;
    // The deploy's statements again, with the operator's signed resume
    // (issue 19): an agent where the deploy failed asks for it.
    if !request.approvals.signatures.is_empty() {
        request.approvals.signatures.extend(signed_resume);
        request.approvals.fleet_rollout = fleet_id.to_owned();
        request.approvals.fleet_members = recorded_members(&targets);
    }
    // Named before the claim: once `running` again, a sweep must see its
    // new, live driver, not the dead one it was halted for.
    record_driver(&controller, fleet_id).await;
    if !controller
        .store
        .claim_fleet(fleet_id, fleet_state::HALTED)
        .await
        .map_err(store_error)?
    {
        return Err(EngineError::Refused(format!(
            "fleet rollout {fleet_id} was resumed by someone else meanwhile"
        )));
    }
    let in_flight = controller.drain.enter()?;
    controller
        .audit(AuditEntry {
            actor: actor.to_owned(),
            action: "fleet.resumed".into(),
            outcome: "ok".into(),
            rollout_id: Some(fleet_id.to_owned()),
            environment: Some(record.environment.clone()),
            procedure: Some(request.plan.label.clone()),
            trace_id: Some(record.trace_id.clone()),
            details: format!(
                "{} of {} target(s) left to run",
                targets
                    .iter()
                    .filter(|t| t.state != crate::store::state::SUCCEEDED)
                    .count(),
                targets.len()
            ),
        })
        .await;
    let (out, receiver) = started_updates(RolloutStarted {
        rollout_id: fleet_id.to_owned(),
        environment: record.environment.clone(),
        zone: zones_of(targets.iter().map(|t| t.zone.as_str())),
        agent_name: format!("{} target(s), resumed", targets.len()),
        trace_id: record.trace_id.clone(),
        actor: actor.to_owned(),
        started_at_unix_ms: now_unix_ms(),
        fleet_targets: targets.len() as u32,
        ..Default::default()
    })
    .await;
    let fleet_id = fleet_id.to_owned();
    tokio::spawn(async move {
        drive::run(controller, fleet_id, request, out).await;
        drop(in_flight);
    });
    Ok(receiver)
}

/// `pgrollout rollback --rollout f-…`: every target the fleet rollout
/// changed is rolled back by the ordinary rollback job, in reverse order.
pub async fn rollback(
    controller: Arc<Controller>,
    fleet_id: &str,
    actor: &str,
    agent_wait: std::time::Duration,
    mut approvals: pgrollout_shared::job::SignedApprovals,
) -> Result<Updates, EngineError> {
    drive::refresh(&controller, fleet_id).await;
    let (record, targets) = controller
        .store
        .fleet(fleet_id)
        .await
        .map_err(EngineError::store("read the fleet rollout"))?
        .ok_or_else(|| {
            EngineError::NotFound(format!(
                "no fleet rollout {fleet_id}; see `pgrollout rollouts`"
            ))
        })?;
    if record.state == fleet_state::RUNNING {
        return Err(EngineError::Refused(format!(
            "fleet rollout {fleet_id} is still running; wait for it to end (or halt), then roll it back"
        )));
    }
    if !targets
        .iter()
        .any(|t| t.state == crate::store::state::SUCCEEDED)
    {
        return Err(EngineError::Refused(format!(
            "fleet rollout {fleet_id} changed no target that is not rolled back already: nothing to roll back"
        )));
    }
    // Signed by the operator for the fleet rollout (issue 19): each
    // target's rollback job carries the fleet's members and id.
    if !approvals.signatures.is_empty() {
        approvals.fleet_rollout = fleet_id.to_owned();
        approvals.fleet_members = recorded_members(&targets);
    }
    let in_flight = controller.drain.enter()?;
    let (out, receiver) = started_updates(RolloutStarted {
        rollout_id: fleet_id.to_owned(),
        environment: record.environment.clone(),
        zone: zones_of(targets.iter().map(|t| t.zone.as_str())),
        agent_name: "rollback of every changed target".into(),
        trace_id: record.trace_id.clone(),
        actor: actor.to_owned(),
        started_at_unix_ms: now_unix_ms(),
        fleet_targets: targets.len() as u32,
        ..Default::default()
    })
    .await;
    let actor = actor.to_owned();
    tokio::spawn(async move {
        let all =
            drive::roll_back_fleet(&controller, &record, &actor, agent_wait, &approvals, &out)
                .await;
        drive::finish(&controller, &record.id, &out, Some(all)).await;
        drop(in_flight);
    });
    Ok(receiver)
}

/// A fleet rollout's updates, opened with its `Started` message: what its
/// start, resume and rollback each tell their followers first.
async fn started_updates(started: RolloutStarted) -> (UpdateSender, Updates) {
    let (out, receiver) = mpsc::channel(256);
    let _ = out
        .send(Ok(RolloutUpdate {
            body: Some(rollout_update::Body::Started(started)),
        }))
        .await;
    (out, receiver)
}

/// `zone/target` of each member, as a fleet's statements sign them.
fn member_names(members: &[waves::Member]) -> Vec<String> {
    members
        .iter()
        .map(|m| pgrollout_shared::signing::fleet::member(&m.zone, &m.target))
        .collect()
}

/// The members a fleet rollout recorded, as its statements sign them.
fn recorded_members(targets: &[FleetTargetRow]) -> Vec<String> {
    targets
        .iter()
        .map(|t| pgrollout_shared::signing::fleet::member(&t.zone, &t.target))
        .collect()
}

/// `prod-eu,prod-us`: the zones of a fleet's targets, each once.
fn zones_of<'a>(zones: impl Iterator<Item = &'a str>) -> String {
    let zones: std::collections::BTreeSet<&str> = zones.collect();
    zones.into_iter().collect::<Vec<_>>().join(",")
}

/// At start-up (`AtStart`) and with each heartbeat's sweep (`DeadOnly`): a
/// fleet rollout whose driver died is `halted`, audited; `resume`
/// continues it once its targets in doubt are settled. On a shared store
/// only the fleets no live controller drives (`store/controllers.rs`); a
/// sole controller halts every running one at start.
pub async fn after_restart(controller: &Controller, which: crate::store::Settle) {
    let sweep = match controller.identity.get() {
        Some(me) if controller.store.shared_by_controllers() => Some(crate::store::Sweep {
            me: me.id.clone(),
            which,
            now: now_unix_ms(),
            dead_after_ms: super::identity::dead_after_ms(),
        }),
        _ if which == crate::store::Settle::DeadOnly => return,
        _ => None,
    };
    let halted = match controller
        .store
        .halt_interrupted_fleets(now_unix_ms(), sweep.as_ref())
        .await
    {
        Ok(halted) => halted,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "cannot halt interrupted fleet rollouts");
            return;
        }
    };
    for fleet_id in halted {
        tracing::warn!(fleet_id = %fleet_id, "fleet rollout interrupted: the controller driving it stopped; halted");
        controller
            .audit(AuditEntry {
                actor: "controller".into(),
                action: "fleet.interrupted".into(),
                outcome: "halted".into(),
                rollout_id: Some(fleet_id),
                details: "the controller stopped while this fleet rollout ran; halted — `pgrollout status` shows its \
                          targets, `pgrollout resume` continues it"
                    .into(),
                ..Default::default()
            })
            .await;
    }
}

/// Names this controller as the one driving `fleet_id` (issue 18), so no
/// other halts it while this one lives. A failure is logged: the fleet then
/// keeps its previous driver (or none) and may be halted early, never run
/// twice.
async fn record_driver(controller: &Controller, fleet_id: &str) {
    let Some(me) = controller.identity.get() else {
        return;
    };
    if let Err(error) = controller.store.record_fleet_driver(fleet_id, &me.id).await {
        tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), fleet_id, "cannot record the fleet rollout's driver");
    }
}
