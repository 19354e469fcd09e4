//! One rollout: find an agent of the environment's zone, record the rollout,
//! offer the job, then relay the job's updates to the operator until its
//! result — and settle the rollout when the job never produces one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::{now_unix_ms, Job, JobKind};
use pgrollout_shared::proto::{
    rollout_update, JobResult, Outcome, RolloutStarted, RolloutUpdate, StepStatus,
};
use pgrollout_shared::traceparent::TraceParent;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::error::EngineError;
use super::router::JobUpdate;
use super::updates::{UpdateSender, Updates};
use super::{new_id, Controller};
use crate::domain::plan::Plan;
use crate::store::{state, AuditEntry, NewRollout};
use crate::telemetry::spans;

/// A validated request to run a plan against an environment.
pub struct RolloutRequest {
    pub environment: String,
    pub plan: Plan,
    /// What the agent is to do with the plan's routines.
    pub kind: JobKind,
    pub actor: String,
    pub trace: TraceParent,
    pub agent_wait: Duration,
    /// The gate verdicts the request passed, recorded with the rollout.
    pub gates: Vec<pgrollout_shared::proto::GateOutcome>,
    /// A deploy's order as computed here, shown to the operator when the
    /// rollout starts.
    pub order: Option<pgrollout_shared::proto::DeployOrderView>,
    /// The operators' signed statements (issue 19), forwarded verbatim.
    pub approvals: pgrollout_shared::job::SignedApprovals,
    /// Issue 24: what a failed target does to the rest of a fleet rollout
    /// (ignored for a one-target environment).
    pub fleet_policy: super::fleet::policy::Policy,
}

/// Issue 24: the one target of a fleet a rollout runs on, instead of the
/// environment's `zone` + `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub zone: String,
    pub target: String,
}

/// Starts the rollout; updates arrive on the returned receiver. Refusals
/// before anything was offered come back as an `EngineError`.
pub async fn start(
    controller: Arc<Controller>,
    mut request: RolloutRequest,
) -> Result<Updates, EngineError> {
    let environment = controller
        .config
        .environments
        .get(&request.environment)
        .ok_or_else(|| unknown_environment(&controller, &request.environment))?;
    let placement = if environment.is_fleet() {
        if let JobKind::Check { .. } = &request.kind {
            // The dry run of a fleet's signed deploy carries its members
            // (issue 19 with 24), as each target's deploy will.
            let (members, _) =
                super::fleet::members::for_signing(&controller, &request.environment, "").await?;
            super::fleet::members::attach(&mut request.approvals, members)?;
        }
        Some(fleet_placement(&controller, &request).await?)
    } else {
        None
    };
    start_on(controller, request, placement).await
}

/// Issue 24: in a fleet environment a job runs on one target only as the
/// rollback of that target's own rollout; a deploy goes over the fleet
/// (`engine::launch`), and anything else is refused.
async fn fleet_placement(
    controller: &Controller,
    request: &RolloutRequest,
) -> Result<Placement, EngineError> {
    if let JobKind::Check { .. } = &request.kind {
        // The syntax gate's dry run: on the canary.
        let (zone, target) =
            super::fleet::members::dry_run_placement(controller, &request.environment).await?;
        return Ok(Placement { zone, target });
    }
    if let JobKind::Rollback(spec) = &request.kind {
        if let pgrollout_shared::operations::RollbackScope::Rollout(undone) = &spec.scope {
            let status = controller
                .store
                .rollout_status(undone)
                .await
                .map_err(EngineError::store("read the rollout to roll back"))?
                .ok_or_else(|| EngineError::NotFound(format!("no rollout {undone}")))?;
            return Ok(Placement {
                zone: status.zone,
                target: status.target,
            });
        }
    }
    Err(EngineError::Refused(format!(
        "environment {} is a fleet of targets; a {} runs on one target and is not supported on a fleet yet \
         (deploy runs over the fleet; `pgrollout rollback --rollout <id>` undoes a fleet rollout or one target's)",
        request.environment,
        request.kind.name()
    )))
}

/// [`start`] on one target: the environment's own, or `placement` (one
/// target of a fleet, issue 24).
pub(super) async fn start_on(
    controller: Arc<Controller>,
    request: RolloutRequest,
    placement: Option<Placement>,
) -> Result<Updates, EngineError> {
    let environment = controller
        .config
        .environments
        .get(&request.environment)
        .ok_or_else(|| unknown_environment(&controller, &request.environment))?;
    // Held until the result was relayed: a draining controller waits for it
    // (engine/drain.rs), and refuses here once it drains.
    let in_flight = controller.drain.enter()?;
    let kind = super::after_deploy::with_environment_steps(
        &controller,
        request.kind,
        &request.environment,
        environment,
    )
    .await;
    let request = RolloutRequest { kind, ..request };
    let (zone, target) = match placement {
        Some(Placement { zone, target }) => (zone, target),
        None => (
            controller
                .config
                .zone_of(&request.environment)
                .unwrap_or_else(|| request.environment.clone()),
            environment.target.clone(),
        ),
    };
    let dispatch = spans::dispatch_span(&request.trace, &zone, &target);
    let wait = request
        .agent_wait
        .min(controller.config.deployment.max_agent_wait);
    // Connected here, or (on a shared store) to another controller that
    // offers the job for this one (`delivery.rs`).
    let destination = super::delivery::find_agent(&controller, &zone, &target, wait)
        .await
        .ok_or_else(|| {
            EngineError::Unavailable(format!(
                "no agent connected for zone {zone} (environment {}, target {target}); start pgrollout-agent \
                 in that zone, or check its log and `pgrollout agents`",
                request.environment
            ))
        })?;
    let agent_name = destination.agent_name().to_owned();
    dispatch.record("pgrollout.agent", agent_name.as_str());

    let rollout_id = new_id("r");
    let job_id = new_id("j");
    spans::record_rollout(&rollout_id, &job_id, &request.plan.plan_id, &request.actor);
    let now = now_unix_ms();
    let store_error = EngineError::store("record the rollout");
    controller
        .store
        .save_plan(&request.plan, now)
        .await
        .map_err(store_error)?;
    let kind = request.kind.name();
    controller
        .store
        .create_rollout(
            NewRollout {
                id: &rollout_id,
                plan_id: &request.plan.plan_id,
                kind,
                environment: &request.environment,
                zone: &zone,
                target: &target,
                actor: &request.actor,
                trace_id: &request.trace.trace_id,
                created_at: now,
            },
            &job_id,
            1,
        )
        .await
        .map_err(store_error)?;
    controller
        .store
        .record_gates(&rollout_id, &request.gates)
        .await
        .map_err(store_error)?;

    // A rollback is bounded by its own, usually shorter, limit.
    let job_timeout = match request.kind {
        JobKind::Rollback(_) => controller.config.deployment.rollback_timeout,
        _ => controller.config.deployment.job_timeout,
    };
    let backup_retention_days = environment.backup_retention_days.unwrap_or(0);
    let mut job = Job {
        backup_retention_days,
        // Set below, once the rollout's own entry is in the log.
        audit_head: None,
        approvals: request.approvals.clone(),
        id: job_id.clone(),
        attempt: 1,
        deadline: SystemTime::now() + job_timeout,
        lease: Some(controller.config.deployment.job_lease),
        // The agent's job span is a child of the dispatch span.
        trace: spans::job_traceparent(&dispatch, &request.trace),
        target,
        rollout_id: rollout_id.clone(),
        plan_id: request.plan.plan_id.clone(),
        actor: request.actor.clone(),
        commit_sha: request.plan.commit_sha.clone(),
        label: request.plan.label.clone(),
        kind: request.kind,
    };
    tracing::info!(
        rollout_id = %rollout_id,
        job_id = %job_id,
        environment = %request.environment,
        zone = %zone,
        agent = %agent_name,
        actor = %request.actor,
        trace_id = %request.trace.trace_id,
        kind,
        "rollout started"
    );
    controller
        .audit(AuditEntry {
            actor: request.actor.clone(),
            action: format!("{kind}.started"),
            outcome: "ok".into(),
            rollout_id: Some(rollout_id.clone()),
            environment: Some(request.environment.clone()),
            procedure: Some(request.plan.label.clone()),
            trace_id: Some(request.trace.trace_id.clone()),
            // A rollback, disable, enable or history carries an operation
            // record, not routines: its routines are known from its result.
            details: if request.plan.routines.is_empty() {
                format!(
                    "{kind} of {} to zone {zone} via agent {agent_name}, job {job_id}",
                    request.plan.label
                )
            } else {
                format!(
                    "plan {} ({} routine(s), commit {}) to zone {zone} via agent {agent_name}, job {job_id}{}",
                    request.plan.plan_id,
                    request.plan.routines.len(),
                    request.plan.commit_sha,
                    pgrollout_shared::retire::describe_plan(&request.plan.routines)
                        .map(|retires| format!("; {retires}"))
                        .unwrap_or_default()
                )
            },
        })
        .await;
    job.audit_head = crate::engine::audit_anchors::current_head(&controller).await;
    let offer: pgrollout_shared::proto::JobOffer = job.into();
    controller
        .store
        .record_offer(
            &job_id,
            1,
            &agent_name,
            prost::Message::encode_to_vec(&offer),
        )
        .await
        .map_err(store_error)?;
    claim_job_offered(&controller, &job_id, 1).await;
    // On the agent's stream here, or recorded for the controller holding it
    // (this rollout then follows the job in the store).
    let updates =
        match super::delivery::offer_job(&controller, &destination, &job_id, 1, offer).await {
            Ok(updates) => updates,
            Err(why) => {
                tracing::warn!(job_id = %job_id, reason = %why, "job recorded but not offered");
                return Err(never_offered(&controller, &job_id, &agent_name).await);
            }
        };
    drop(dispatch);

    let (out, receiver) = mpsc::channel(256);
    let started = RolloutStarted {
        rollout_id: rollout_id.clone(),
        job_id: job_id.clone(),
        environment: request.environment.clone(),
        zone,
        agent_name: agent_name.clone(),
        trace_id: request.trace.trace_id.clone(),
        actor: request.actor,
        started_at_unix_ms: now,
        gates: request.gates.clone(),
        order: request.order,
        fleet_targets: 0,
    };
    let _ = out
        .send(Ok(update(rollout_update::Body::Started(started))))
        .await;
    // The rollout span lasts until the job's result; its trace is exported
    // as soon as it ends rather than at the exporter's next tick.
    let rollout_span = tracing::Span::current();
    tokio::spawn(async move {
        relay(controller, agent_name, job_id, 1, updates, out, job_timeout)
            .instrument(rollout_span)
            .await;
        drop(in_flight);
        pgrollout_shared::telemetry::flush_soon();
    });
    Ok(receiver)
}

/// Relays the job's updates to the operator. Keeps going if the operator
/// hangs up: the rollout must still be settled.
pub(super) async fn relay(
    controller: Arc<Controller>,
    agent: String,
    job_id: String,
    attempt: u32,
    mut updates: mpsc::UnboundedReceiver<JobUpdate>,
    out: UpdateSender,
    job_timeout: Duration,
) {
    let accept_timeout = controller.config.deployment.accept_timeout;
    let accepted = tokio::time::timeout(accept_timeout, async {
        loop {
            match updates.recv().await {
                Some(JobUpdate::Accepted) => return Ok(()),
                Some(JobUpdate::Declined { reason }) => {
                    return Err((
                        state::FAILED,
                        format!("agent {agent} declined the job: {reason}"),
                    ))
                }
                Some(JobUpdate::AgentLost { agent }) => {
                    return Err((
                        state::FAILED,
                        format!(
                            "agent {agent} disconnected before its Accept arrived; if it began the job, its result \
                             will still be recorded when it reconnects"
                        ),
                    ))
                }
                // A result that failed its check, even before the Accept:
                // whatever ran is unknown.
                Some(JobUpdate::Malformed { message }) => return Err((state::UNKNOWN, message)),
                Some(_) => continue,
                None => {
                    return Err((
                        state::FAILED,
                        "the job's update channel closed".to_owned(),
                    ))
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err((
            state::FAILED,
            format!(
                "agent {agent} did not accept the job within {}; if it begins the job later, its result will still be \
                 recorded",
                humantime::format_duration(accept_timeout)
            ),
        ))
    });
    let settled = match accepted {
        Err(settled) => Some(settled),
        Ok(()) => {
            follow_job(
                &controller,
                &agent,
                &job_id,
                attempt,
                &mut updates,
                &out,
                job_timeout,
            )
            .await
        }
    };
    if let Some((rollout_state, message)) = settled {
        // A job still waiting for the controller holding its agent is
        // withdrawn first, so it is not offered after it was settled.
        super::delivery::withdraw(&controller, &job_id, attempt).await;
        tracing::warn!(job_id = %job_id, state = rollout_state, reason = %message, "job ended without a result");
        spans::record_outcome(&tracing::Span::current(), rollout_state, true);
        let _ = controller
            .store
            .abandon_job(
                &job_id,
                attempt,
                rollout_state,
                ExitCode::DeploymentFailed.code(),
                &message,
                now_unix_ms(),
            )
            .await;
        controller.notifier.rollout_finished(&job_id);
        let result = JobResult {
            job_id: job_id.clone(),
            attempt,
            outcome: Outcome::DeployFailed as i32,
            message,
            ..Default::default()
        };
        let _ = out
            .send(Ok(update(rollout_update::Body::Finished(result))))
            .await;
    }
    controller.router.unsubscribe(&job_id);
}

/// Forwards events until the result; returns the rollout state and reason
/// when the job ended without one. A lost agent makes the rollout `unknown`
/// at once (so `status` tells the truth), but the wait goes on until the
/// deadline: an agent that reconnects and still runs the job is followed
/// again, and a result from its outbox settles the rollout.
async fn follow_job(
    controller: &Controller,
    agent: &str,
    job_id: &str,
    attempt: u32,
    updates: &mut mpsc::UnboundedReceiver<JobUpdate>,
    out: &UpdateSender,
    job_timeout: Duration,
) -> Option<(&'static str, String)> {
    // The agent enforces the deadline itself; the grace covers its report.
    let deadline = tokio::time::Instant::now() + job_timeout + Duration::from_secs(30);
    // While the agent is lost, the wait for it to come back is bounded by the
    // job's lease: past it, an agent still alive has fenced the job itself.
    let lease = controller.config.deployment.job_lease;
    let mut lost: Option<(String, tokio::time::Instant)> = None;
    loop {
        let until = lost
            .as_ref()
            .map_or(deadline, |(_, since)| deadline.min(*since + lease));
        let next = match tokio::time::timeout_at(until, updates.recv()).await {
            Ok(next) => next,
            Err(_) => {
                let why = match &lost {
                    Some((agent, _)) => format!(
                        "agent {agent} disconnected mid-job and has not come back within the job's lease ({}); the \
                         rollout is unknown until it reports from its journal (the target's ledger decides whether \
                         it applied): see `pgrollout status`, then `pgrollout retry` or `pgrollout resolve`",
                        humantime::format_duration(lease)
                    ),
                    None => format!(
                        "no result from agent {agent} past the job deadline; the rollout is unknown until it reports"
                    ),
                };
                return Some((state::UNKNOWN, why));
            }
        };
        match next {
            Some(JobUpdate::Event(event)) => {
                let _ = out
                    .send(Ok(update(rollout_update::Body::Event(event.into()))))
                    .await;
            }
            Some(JobUpdate::Finished(result)) => {
                spans::record_result(&tracing::Span::current(), result.outcome.into());
                // Relayed whole, as the agent wrote it: the CLI reads it.
                let _ = out
                    .send(Ok(update(rollout_update::Body::Finished(
                        result.into_wire(),
                    ))))
                    .await;
                return None;
            }
            Some(JobUpdate::Malformed { message }) => return Some((state::UNKNOWN, message)),
            Some(JobUpdate::Notice { message }) => {
                let _ = out
                    .send(Ok(link_notice(
                        job_id,
                        attempt,
                        &message,
                        StepStatus::Failed,
                    )))
                    .await;
            }
            Some(JobUpdate::AgentLost { agent }) => {
                let why = format!(
                    "agent {agent} disconnected mid-job; the rollout is unknown until the agent reconnects and \
                     reports (the target's ledger decides whether it applied); waiting"
                );
                let _ = controller
                    .store
                    .abandon_job(
                        job_id,
                        attempt,
                        state::UNKNOWN,
                        ExitCode::DeploymentFailed.code(),
                        &why,
                        now_unix_ms(),
                    )
                    .await;
                let _ = out
                    .send(Ok(link_notice(job_id, attempt, &why, StepStatus::Failed)))
                    .await;
                lost = Some((agent, tokio::time::Instant::now()));
            }
            Some(JobUpdate::Reattached { agent }) => {
                let _ = out
                    .send(Ok(link_notice(
                        job_id,
                        attempt,
                        &format!(
                            "agent {agent} reconnected and still runs the job; following it again"
                        ),
                        StepStatus::Succeeded,
                    )))
                    .await;
                lost = None;
            }
            Some(JobUpdate::Accepted) | Some(JobUpdate::Declined { .. }) => {}
            None => return Some((state::UNKNOWN, "the job's update channel closed".to_owned())),
        }
    }
}

/// A line about the agent's link for the operator; not an agent event, so
/// it carries no sequence number and is not stored.
fn link_notice(job_id: &str, attempt: u32, message: &str, status: StepStatus) -> RolloutUpdate {
    update(rollout_update::Body::Event(
        pgrollout_shared::proto::JobEvent {
            job_id: job_id.to_owned(),
            attempt,
            step: "agent-link".into(),
            status: status as i32,
            message: message.to_owned(),
            at_unix_ms: now_unix_ms(),
            ..Default::default()
        },
    ))
}

/// The job was recorded but could not be offered: it fails, nothing ran.
async fn never_offered(controller: &Controller, job_id: &str, agent: &str) -> EngineError {
    let message =
        format!("agent {agent} disconnected before the job could be offered; nothing ran");
    let _ = controller
        .store
        .abandon_job(
            job_id,
            1,
            state::FAILED,
            ExitCode::DeploymentFailed.code(),
            &message,
            now_unix_ms(),
        )
        .await;
    controller.notifier.rollout_finished(job_id);
    EngineError::Unavailable(message)
}

fn unknown_environment(controller: &Controller, name: &str) -> EngineError {
    let known: Vec<&str> = controller
        .config
        .environments
        .keys()
        .map(String::as_str)
        .collect();
    EngineError::Invalid(format!(
        "unknown environment {name:?}; known environments: {}",
        known.join(", ")
    ))
}

fn update(body: rollout_update::Body) -> RolloutUpdate {
    RolloutUpdate { body: Some(body) }
}

/// Records that this controller offered (and follows) a job's attempt. A
/// failure leaves the job unclaimed: only a start-up with no other live
/// controller settles it, so it is logged, never fatal to the offer.
pub async fn claim_job_offered(controller: &Controller, job_id: &str, attempt: u32) {
    let Some(me) = controller.identity.get() else {
        return;
    };
    if let Err(error) = controller
        .store
        .record_job_controller(job_id, attempt, &me.id)
        .await
    {
        tracing::warn!(job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot record this controller as the job's");
    }
}
