//! Running a fleet rollout's waves: each target is the ordinary one-target
//! rollout (`rollout::start_on`), followed to its result; a wave starts only
//! when the previous one succeeded (and its soak passed); a failed target
//! halts the rest, or not, or rolls back what was done, by the policy. Every
//! step is written to the store first, so `status` reads the truth and
//! `resume` starts from it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::{now_unix_ms, Job, JobKind};
use pgrollout_shared::operations::{RollbackScope, RollbackSpec, RollbackTarget};
use pgrollout_shared::proto::{
    self, rollout_update::Body, FleetReport, FleetTargetState, JobEvent, JobResult, Outcome,
    RolloutUpdate, StepStatus,
};
use pgrollout_shared::traceparent::TraceParent;
use prost::Message;

use super::policy::Policy;
use crate::domain::plan::Plan;
use crate::engine::error::EngineError;
use crate::engine::operations::{self, OperationRequest};
use crate::engine::rollback_sources::{known_versions, Wanted};
use crate::engine::rollout::{self, Placement, RolloutRequest};
use crate::engine::updates::UpdateSender;
use crate::engine::Controller;
use crate::store::{fleet_state, state, AuditEntry, FleetRecord, FleetTargetRow};

/// Runs the fleet's remaining waves, then reports and finishes it.
pub async fn run(
    controller: Arc<Controller>,
    fleet_id: String,
    request: RolloutRequest,
    out: UpdateSender,
) {
    let soak = controller
        .config
        .environments
        .get(&request.environment)
        .and_then(|e| e.rollout.as_ref())
        .and_then(|r| r.soak);
    // Each target runs at most once per run: a failed one is retried only
    // by a later `resume`.
    let mut attempted = BTreeSet::new();
    let mut ended = None;
    loop {
        let Some((record, targets)) = read(&controller, &fleet_id).await else {
            break;
        };
        let runnable = |t: &&FleetTargetRow| {
            (t.state == fleet_state::PENDING || t.state == state::FAILED)
                && !attempted.contains(&t.position)
        };
        let Some(wave) = targets.iter().filter(runnable).map(|t| t.wave).min() else {
            break;
        };
        let members: Vec<FleetTargetRow> = targets
            .iter()
            .filter(runnable)
            .filter(|t| t.wave == wave)
            .cloned()
            .collect();
        let names: Vec<String> = members.iter().map(spelled).collect();
        notice(
            &out,
            &format!("wave {wave}"),
            StepStatus::Succeeded,
            &format!(
                "{}{}",
                if wave == 0 { "canary: " } else { "" },
                names.join(", ")
            ),
        )
        .await;
        let mut running = tokio::task::JoinSet::new();
        for member in members {
            attempted.insert(member.position);
            running.spawn(run_target(
                controller.clone(),
                fleet_id.clone(),
                clone_request(&request),
                member,
                out.clone(),
            ));
        }
        let mut failed = false;
        while let Some(done) = running.join_next().await {
            failed |= !matches!(done.as_deref(), Ok(state::SUCCEEDED));
        }
        let more = targets
            .iter()
            .any(|t| t.wave > wave && t.state == fleet_state::PENDING);
        if failed {
            match Policy::parse(&record.policy) {
                Policy::Continue => {}
                Policy::Halt => {
                    ended = Some(fleet_state::HALTED);
                    break;
                }
                Policy::Rollback => {
                    // Signed by nobody (issue 19): an agent with
                    // `[approvals]` refuses it; `rollback --rollout f-…`,
                    // signed, undoes the rest.
                    let all = roll_back_fleet(
                        &controller,
                        &record,
                        &request.actor,
                        request.agent_wait,
                        &Default::default(),
                        &out,
                    )
                    .await;
                    ended = Some(if all {
                        fleet_state::ROLLED_BACK
                    } else {
                        fleet_state::FAILED
                    });
                    break;
                }
            }
        } else if let (Some(soak), true) = (soak, more) {
            notice(
                &out,
                "soak",
                StepStatus::Succeeded,
                &format!(
                    "wave {wave} succeeded; waiting {} before the next",
                    humantime::format_duration(soak)
                ),
            )
            .await;
            tokio::time::sleep(soak).await;
        }
    }
    let ended = match ended {
        Some(ended) => ended,
        None => match read(&controller, &fleet_id).await {
            Some((_, targets)) if targets.iter().all(|t| t.state == state::SUCCEEDED) => {
                fleet_state::SUCCEEDED
            }
            _ => fleet_state::FAILED,
        },
    };
    if let Err(error) = controller
        .store
        .set_fleet_state(&fleet_id, ended, now_unix_ms())
        .await
    {
        tracing::error!(fleet_id, error = %pgrollout_shared::errors::error_chain(&error), "recording a fleet's end failed");
    }
    finish(&controller, &fleet_id, &out, None).await;
}

/// One target: its own rollout, followed to its result; its state recorded.
async fn run_target(
    controller: Arc<Controller>,
    fleet_id: String,
    request: RolloutRequest,
    member: FleetTargetRow,
    out: UpdateSender,
) -> &'static str {
    let name = spelled(&member);
    let store = &controller.store;
    let _ = store
        .set_fleet_target(&fleet_id, member.position, state::RUNNING, None, None, "")
        .await;
    let started = std::time::Instant::now();
    let placement = Placement {
        zone: member.zone.clone(),
        target: member.target.clone(),
    };
    let mut updates = match rollout::start_on(controller.clone(), request, Some(placement)).await {
        Ok(updates) => updates,
        Err(error) => {
            // Nothing was offered: the target is untouched, and failed.
            let code = exit_of(&error);
            let message = error.to_string();
            let _ = store
                .set_fleet_target(
                    &fleet_id,
                    member.position,
                    state::FAILED,
                    None,
                    Some(code.code()),
                    &message,
                )
                .await;
            notice(
                &out,
                &name,
                StepStatus::Failed,
                &format!("not started: {message}"),
            )
            .await;
            return state::FAILED;
        }
    };
    let mut rollout_id = None;
    let mut result: Option<JobResult> = None;
    while let Some(update) = updates.recv().await {
        match update {
            Ok(RolloutUpdate {
                body: Some(Body::Started(started)),
            }) => {
                let _ = store
                    .set_fleet_target(
                        &fleet_id,
                        member.position,
                        state::RUNNING,
                        Some(&started.rollout_id),
                        None,
                        "",
                    )
                    .await;
                rollout_id = Some(started.rollout_id);
            }
            // A failed step is worth seeing at once, under its target.
            Ok(RolloutUpdate {
                body: Some(Body::Event(event)),
            }) if event.status == StepStatus::Failed as i32 => {
                notice(
                    &out,
                    &name,
                    StepStatus::Failed,
                    &format!("{}: {}", event.step, event.message),
                )
                .await;
            }
            Ok(RolloutUpdate {
                body: Some(Body::Finished(finished)),
            }) => result = Some(finished),
            _ => {}
        }
    }
    let outcome = result
        .as_ref()
        .map_or(Outcome::DeployFailed, |r| r.outcome());
    let code = ExitCode::from_outcome(outcome);
    let message = result
        .as_ref()
        .map(|r| r.message.clone())
        .unwrap_or_default();
    // The rollout's own record says succeeded, failed or unknown (an agent
    // lost mid-job): the fleet keeps the same word.
    let recorded = match &rollout_id {
        Some(id) => store
            .rollout_status(id)
            .await
            .ok()
            .flatten()
            .map(|s| s.state),
        None => None,
    };
    let target_state: &'static str = match recorded.as_deref() {
        Some(state::SUCCEEDED) if code == ExitCode::Success => state::SUCCEEDED,
        Some(state::UNKNOWN) => state::UNKNOWN,
        Some(state::RUNNING) => state::UNKNOWN,
        _ if code == ExitCode::Success && recorded.is_none() => state::UNKNOWN,
        _ => state::FAILED,
    };
    let _ = store
        .set_fleet_target(
            &fleet_id,
            member.position,
            target_state,
            rollout_id.as_deref(),
            Some(code.code()),
            &message,
        )
        .await;
    let status = if target_state == state::SUCCEEDED {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    let rollout = rollout_id.as_deref().unwrap_or("-");
    let text = if target_state == state::SUCCEEDED {
        format!("succeeded (rollout {rollout})")
    } else {
        format!(
            "{target_state}, exit {} (rollout {rollout}): {message}",
            code.code()
        )
    };
    notice_timed(&out, &name, status, &text, started.elapsed()).await;
    target_state
}

/// Rolls back every target of the fleet that succeeded, in reverse order,
/// each with the ordinary rollback job of its own rollout; whether every
/// one was rolled back (the fleet is then `rolled_back`).
pub async fn roll_back_fleet(
    controller: &Arc<Controller>,
    record: &FleetRecord,
    actor: &str,
    agent_wait: Duration,
    approvals: &pgrollout_shared::job::SignedApprovals,
    out: &UpdateSender,
) -> bool {
    let Some((_, targets)) = read(controller, &record.id).await else {
        return false;
    };
    let mut all = true;
    let mut done: Vec<&FleetTargetRow> = targets
        .iter()
        .filter(|t| t.state == state::SUCCEEDED && t.rollout_id.is_some())
        .collect();
    done.sort_by_key(|t| std::cmp::Reverse((t.wave, t.position)));
    let wanted = match controller.store.plan_blob(&record.plan_id).await {
        Ok(Some(blob)) => proto::Plan::decode(blob.as_slice())
            .map(|plan| Wanted {
                names: plan
                    .routines
                    .iter()
                    .map(|r| (Some(r.schema.clone()), r.name.clone()))
                    .collect(),
            })
            .ok(),
        _ => None,
    };
    let versions = match &wanted {
        Some(wanted) => known_versions(&controller.store, &record.environment, wanted)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    for target in done {
        let name = spelled(target);
        let undone = target.rollout_id.clone().unwrap_or_default();
        let operation = OperationRequest {
            environment: record.environment.clone(),
            label: format!(
                "{} ({name})",
                record.plan_id.get(..12).unwrap_or(&record.plan_id)
            ),
            kind: JobKind::Rollback(RollbackSpec {
                scope: RollbackScope::Rollout(undone.clone()),
                target: RollbackTarget::Previous,
                emergency: None,
                known_versions: versions.clone(),
            }),
            actor: actor.to_owned(),
            trace: trace_of(&record.trace_id),
            agent_wait,
            description: format!("fleet {}\n{undone}", record.id),
            // `rollback --rollout f-…`'s statement, signed for the fleet
            // rollout (issue 19); none for a `--rollback-on-failure`.
            approvals: approvals.clone(),
        };
        let placement = Placement {
            zone: target.zone.clone(),
            target: target.target.clone(),
        };
        let began = std::time::Instant::now();
        let mut by = String::from("-");
        let outcome = match operations::start_on(controller.clone(), operation, placement).await {
            Err(error) => Err(error.to_string()),
            Ok(mut updates) => {
                let mut result = None;
                while let Some(update) = updates.recv().await {
                    match update {
                        Ok(RolloutUpdate {
                            body: Some(Body::Finished(finished)),
                        }) => result = Some(finished),
                        Ok(RolloutUpdate {
                            body: Some(Body::Started(started)),
                        }) => by = started.rollout_id,
                        _ => {}
                    }
                }
                match result {
                    Some(r) if r.outcome() == Outcome::Succeeded => Ok(()),
                    Some(r) => Err(r.message),
                    None => Err("the rollback ended without a result".into()),
                }
            }
        };
        match outcome {
            Ok(()) => {
                let _ = controller
                    .store
                    .set_fleet_target(
                        &record.id,
                        target.position,
                        state::ROLLED_BACK,
                        None,
                        None,
                        &format!("rolled back by rollout {by}"),
                    )
                    .await;
                notice_timed(
                    out,
                    &name,
                    StepStatus::Succeeded,
                    &format!("rolled back (rollout {undone} undone by {by})"),
                    began.elapsed(),
                )
                .await;
            }
            Err(message) => {
                all = false;
                notice_timed(
                    out,
                    &name,
                    StepStatus::Failed,
                    &format!("rollback of rollout {undone} failed ({by}): {message}"),
                    began.elapsed(),
                )
                .await;
            }
        }
    }
    if all {
        let _ = controller
            .store
            .set_fleet_state(&record.id, fleet_state::ROLLED_BACK, now_unix_ms())
            .await;
    }
    all
}

/// The fleet's report, then its result: the worst exit code of its
/// targets, and the summary as the message. `undone`: the result of
/// `rollback --rollout f-…`, which succeeded when every target was undone.
pub async fn finish(
    controller: &Controller,
    fleet_id: &str,
    out: &UpdateSender,
    undone: Option<bool>,
) {
    let Some(mut report) = report(controller, fleet_id).await else {
        return;
    };
    if let Some(all) = undone {
        report.exit_code = if all {
            0
        } else {
            ExitCode::DeploymentFailed.code()
        };
    }
    let summary = summary_line(&report);
    controller
        .audit(AuditEntry {
            actor: "controller".into(),
            action: "fleet.finished".into(),
            outcome: if report.exit_code == 0 {
                "ok"
            } else {
                "failed"
            }
            .into(),
            rollout_id: Some(fleet_id.to_owned()),
            environment: Some(report.environment.clone()),
            procedure: None,
            trace_id: None,
            details: summary.clone(),
        })
        .await;
    let outcome = match report.exit_code {
        0 => Outcome::Succeeded,
        1 => Outcome::ValidationFailed,
        3 => Outcome::SmokeFailed,
        _ => Outcome::DeployFailed,
    };
    let _ = out
        .send(Ok(RolloutUpdate {
            body: Some(Body::Fleet(report)),
        }))
        .await;
    let _ = out
        .send(Ok(RolloutUpdate {
            body: Some(Body::Finished(JobResult {
                job_id: fleet_id.to_owned(),
                attempt: 1,
                outcome: outcome as i32,
                message: summary,
                ..Default::default()
            })),
        }))
        .await;
}

/// Brings each target's state up to its own rollout's: a target left
/// `unknown` (its agent lost mid-job) becomes what `retry` or `resolve`
/// settled from its ledger, a target rolled back on its own becomes
/// `rolled_back`. The fleet never re-runs a target to find out.
pub async fn refresh(controller: &Controller, fleet_id: &str) {
    let Some((_, targets)) = read(controller, fleet_id).await else {
        return;
    };
    for target in targets {
        let Some(rollout_id) = &target.rollout_id else {
            continue;
        };
        let follows = matches!(target.state.as_str(), state::UNKNOWN | state::SUCCEEDED);
        if !follows {
            continue;
        }
        let Ok(Some(status)) = controller.store.rollout_status(rollout_id).await else {
            continue;
        };
        let settled = matches!(
            status.state.as_str(),
            state::SUCCEEDED | state::FAILED | state::ROLLED_BACK
        );
        if settled && status.state != target.state {
            let message = format!(
                "{} (its rollout {rollout_id}): {}",
                status.state, status.message
            );
            let _ = controller
                .store
                .set_fleet_target(
                    fleet_id,
                    target.position,
                    &status.state,
                    None,
                    Some(status.exit_code),
                    &message,
                )
                .await;
        }
    }
}

/// The fleet as `status` shows it and the CLI reports it.
pub async fn report(controller: &Controller, fleet_id: &str) -> Option<FleetReport> {
    refresh(controller, fleet_id).await;
    let (record, targets) = read(controller, fleet_id).await?;
    // The worst code of a target still standing failed; a target rolled
    // back by the policy no longer counts against the fleet... but the
    // fleet failed: at least 2.
    let worst = targets
        .iter()
        .filter(|t| t.state != state::SUCCEEDED && t.state != fleet_state::PENDING)
        .filter_map(|t| t.exit_code)
        .max()
        .unwrap_or(0);
    let exit_code = match record.state.as_str() {
        fleet_state::SUCCEEDED => 0,
        fleet_state::RUNNING => worst,
        _ => worst.max(ExitCode::DeploymentFailed.code()),
    };
    Some(FleetReport {
        fleet_id: record.id,
        environment: record.environment,
        plan_id: record.plan_id,
        state: record.state,
        exit_code,
        targets: targets
            .into_iter()
            .map(|t| FleetTargetState {
                zone: t.zone,
                target: t.target,
                wave: t.wave,
                state: t.state,
                rollout_id: t.rollout_id.unwrap_or_default(),
                exit_code: t.exit_code.unwrap_or_default(),
                message: t.message,
            })
            .collect(),
    })
}

/// `fleet f-…: halted — 3 succeeded, 1 failed, 2 untouched, 0 rolled back`.
pub fn summary_line(report: &FleetReport) -> String {
    let count = |state: &str| report.targets.iter().filter(|t| t.state == state).count();
    format!(
        "fleet {} {}: {} succeeded, {} failed, {} untouched, {} rolled back{}",
        report.fleet_id,
        report.state,
        count(state::SUCCEEDED),
        count(state::FAILED),
        count(fleet_state::PENDING),
        count(state::ROLLED_BACK),
        match count(state::UNKNOWN) {
            0 => String::new(),
            n => format!(", {n} unknown"),
        }
    )
}

/// What `resume` runs: the fleet's plan from the store and the job kind its
/// targets' jobs were offered with.
pub async fn request_of(
    controller: &Controller,
    record: &FleetRecord,
    targets: &[FleetTargetRow],
    actor: &str,
    agent_wait: Duration,
) -> Result<RolloutRequest, EngineError> {
    let store_error = EngineError::store("read the fleet's plan and job");
    let corrupt = || {
        EngineError::Refused(format!(
            "the plan or job of fleet rollout {} cannot be read back; deploy again",
            record.id
        ))
    };
    let blob = controller
        .store
        .plan_blob(&record.plan_id)
        .await
        .map_err(store_error)?
        .ok_or_else(corrupt)?;
    let plan = proto::Plan::decode(blob.as_slice())
        .ok()
        .and_then(|p| Plan::try_from(p).ok())
        .ok_or_else(corrupt)?;
    let mut kind = None;
    let mut approvals = pgrollout_shared::job::SignedApprovals::default();
    for rollout_id in targets.iter().filter_map(|t| t.rollout_id.as_deref()) {
        let latest = controller
            .store
            .latest_job(rollout_id)
            .await
            .map_err(store_error)?;
        if let Some(offer) = latest.and_then(|l| l.offer) {
            if let Ok(job) = Job::try_from(offer) {
                kind = Some(job.kind);
                approvals = job.approvals;
                break;
            }
        }
    }
    let kind = kind.ok_or_else(corrupt)?;
    Ok(RolloutRequest {
        environment: record.environment.clone(),
        plan,
        kind,
        actor: actor.to_owned(),
        trace: trace_of(&record.trace_id),
        agent_wait,
        gates: Vec::new(),
        order: None,
        // The deploy's statements as its jobs carried them (issue 19),
        // without a previous resume's: `resume` adds the one signed now.
        approvals: pgrollout_shared::job::SignedApprovals {
            request_id: approvals.request_id,
            signatures: approvals
                .signatures
                .into_iter()
                .filter(|s| {
                    pgrollout_shared::signing::Statement::decode(&s.statement).map_or(true, |s| {
                        s.action != pgrollout_shared::signing::action::RESUME
                    })
                })
                .collect(),
            ..Default::default()
        },
        fleet_policy: Policy::parse(&record.policy),
    })
}

fn trace_of(trace_id: &str) -> TraceParent {
    TraceParent::parse(&format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .unwrap_or_else(TraceParent::new_root)
}

fn clone_request(request: &RolloutRequest) -> RolloutRequest {
    RolloutRequest {
        environment: request.environment.clone(),
        plan: request.plan.clone(),
        kind: request.kind.clone(),
        actor: request.actor.clone(),
        trace: request.trace.clone(),
        agent_wait: request.agent_wait,
        gates: request.gates.clone(),
        order: None,
        approvals: request.approvals.clone(),
        fleet_policy: request.fleet_policy,
    }
}

fn exit_of(error: &EngineError) -> ExitCode {
    match error {
        EngineError::Unavailable(_) | EngineError::Store { .. } => ExitCode::DeploymentFailed,
        _ => ExitCode::ValidationFailed,
    }
}

fn spelled(target: &FleetTargetRow) -> String {
    format!("{}/{}", target.zone, target.target)
}

async fn read(
    controller: &Controller,
    fleet_id: &str,
) -> Option<(FleetRecord, Vec<FleetTargetRow>)> {
    match controller.store.fleet(fleet_id).await {
        Ok(found) => found,
        Err(error) => {
            tracing::error!(fleet_id, error = %pgrollout_shared::errors::error_chain(&error), "reading a fleet rollout failed");
            None
        }
    }
}

async fn notice(out: &UpdateSender, step: &str, status: StepStatus, message: &str) {
    notice_timed(out, step, status, message, Duration::ZERO).await;
}

/// A line for the operator about the fleet; not an agent event, so it is
/// not stored (each target's own events are, under its rollout).
async fn notice_timed(
    out: &UpdateSender,
    step: &str,
    status: StepStatus,
    message: &str,
    took: Duration,
) {
    let _ = out
        .send(Ok(RolloutUpdate {
            body: Some(Body::Event(JobEvent {
                step: step.to_owned(),
                status: status as i32,
                message: message.to_owned(),
                at_unix_ms: now_unix_ms(),
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                ..Default::default()
            })),
        }))
        .await;
}
