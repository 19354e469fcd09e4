//! Approvals (DESIGN §6): a deploy whose only unmet gates are approvals or a
//! stakeholder sign-off is parked as a request; approvers decide on it; the
//! decision that completes it starts the rollout — or schedules it, when its
//! window is closed (approvals first, then the window). Approvals are bound
//! to the request's plan id, and nobody approves their own request.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::exit_code::AWAITING_APPROVAL_METADATA;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::ApproveResponse;
use pgrollout_shared::traceparent::TraceParent;
use tonic::Status;

use super::gates::{self, requester_name, GateCheck, Verdict};
use super::requests::{self, request_state, StartError};
use crate::auth::Caller;
use crate::config::OperatorRole;
use crate::engine::rollout::RolloutRequest;
use crate::engine::{new_id, Controller};
use crate::store::{Approval, AuditEntry, PendingRollout};

/// What the request asked for besides the plan.
pub struct Parked {
    pub continue_on_error: bool,
    pub ticket: String,
    pub runbook: String,
    pub rollback_plan: String,
}

/// Parks a request that waits only for people; the returned status tells the
/// operator its id and what it waits for, and is marked so the CLI exits with
/// its own "awaiting approval" code (nothing changed yet).
pub async fn park(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    waiting_for: &str,
) -> Status {
    match park_request(controller, request, parked, waiting_for, new_id("p")).await {
        Ok(pending) => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Ok(value) = pending.request_id.parse() {
                metadata.insert(AWAITING_APPROVAL_METADATA, value);
            }
            Status::with_metadata(
                tonic::Code::FailedPrecondition,
                format!(
                    "request {} awaits approval and changed nothing yet ({waiting_for}); an approver runs \
                     `pgrollout approve {}`, and the last approval it needs starts the rollout (or schedules it for its window)",
                    pending.request_id, pending.request_id
                ),
                metadata,
            )
        }
        Err(status) => status,
    }
}

/// Records the parked request under `request_id`, audits and notifies.
pub async fn park_request(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    waiting_for: &str,
    request_id: String,
) -> Result<PendingRollout, Status> {
    let pending = PendingRollout {
        request_id,
        environment: request.environment.clone(),
        plan: request.plan.clone(),
        actor: request.actor.clone(),
        trace_id: request.trace.trace_id.clone(),
        continue_on_error: parked.continue_on_error,
        ticket: parked.ticket,
        runbook: parked.runbook,
        rollback_plan: parked.rollback_plan,
        state: "awaiting_approval".into(),
        rollout_id: None,
    };
    let now = now_unix_ms();
    let stored = async {
        controller.store.save_plan(&pending.plan, now).await?;
        controller.store.park_rollout(&pending, now).await
    }
    .await;
    if let Err(error) = stored {
        tracing::error!(error = %anyhow::Error::from(error), "parking a request failed");
        return Err(Status::internal(
            "the controller could not record the request; see its log",
        ));
    }
    controller
        .audit(AuditEntry {
            actor: pending.actor.clone(),
            action: "approval.requested".into(),
            outcome: "pending".into(),
            environment: Some(pending.environment.clone()),
            procedure: Some(pending.plan.label.clone()),
            trace_id: Some(pending.trace_id.clone()),
            details: format!(
                "request {} for plan {}: {waiting_for}",
                pending.request_id, pending.plan.plan_id
            ),
            ..Default::default()
        })
        .await;
    notify_approval_needed(controller, &pending);
    Ok(pending)
}

/// Tells the environment's channels that a request needs approvers.
pub fn notify_approval_needed(controller: &Controller, pending: &PendingRollout) {
    let approvals_required = controller
        .config
        .environments
        .get(&pending.environment)
        .map_or(1, |e| e.approvals);
    controller
        .notifier
        .approval_needed(crate::notify::ApprovalNeeded {
            rollout_id: pending.request_id.clone(),
            kind: "deploy".into(),
            environment: pending.environment.clone(),
            procedure: pending.plan.label.clone(),
            requested_by: pending.actor.clone(),
            plan_id: pending.plan.plan_id.clone(),
            commit_sha: pending.plan.commit_sha.clone(),
            trace_id: pending.trace_id.clone(),
            approvals_required,
        });
}

/// Records `caller`'s decision and, when it completes the request, starts
/// the rollout.
pub async fn decide(
    controller: Arc<Controller>,
    caller: &Caller,
    request_id: &str,
    reject: bool,
    reason: &str,
    role: OperatorRole,
) -> Result<ApproveResponse, Status> {
    let store_error = |e: crate::store::StoreError| {
        tracing::error!(error = %anyhow::Error::from(e), "approval store access failed");
        Status::internal("the controller could not record the decision; see its log")
    };
    let pending = controller
        .store
        .pending_rollout(request_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| Status::not_found(format!("no request {request_id:?} awaits approval")))?;
    if pending.state != "awaiting_approval" {
        return Err(Status::failed_precondition(format!(
            "request {request_id} is already {}{}",
            pending.state,
            pending
                .rollout_id
                .as_deref()
                .map(|r| format!(" (rollout {r})"))
                .unwrap_or_default()
        )));
    }
    if caller.name == requester_name(&pending.actor) {
        let refusal = format!(
            "operator {} requested {request_id} and cannot approve it; another {} must",
            caller.name,
            role.as_str()
        );
        // A refused self-approval is an attempt worth knowing about, like a
        // missing role (`auth.denied`).
        controller
            .audit(AuditEntry {
                actor: caller.actor(),
                action: "approval.refused".into(),
                outcome: "refused".into(),
                environment: Some(pending.environment.clone()),
                procedure: Some(pending.plan.label.clone()),
                trace_id: Some(pending.trace_id.clone()),
                details: refusal.clone(),
                ..Default::default()
            })
            .await;
        return Err(Status::permission_denied(refusal));
    }
    if reject && reason.trim().is_empty() {
        return Err(Status::invalid_argument("a rejection needs --reason"));
    }
    let decision = Approval {
        approver: caller.name.clone(),
        role: role.as_str().to_owned(),
        decision: if reject { "reject" } else { "approve" }.to_owned(),
    };
    let now = now_unix_ms();
    let recorded = controller
        .store
        .record_approval(request_id, &pending.plan.plan_id, &decision, reason, now)
        .await
        .map_err(store_error)?;
    if !recorded.changed {
        // The same operator saying the same thing again changes nothing: no
        // second audit entry, and the operator is told so.
        return Ok(ApproveResponse {
            state: request_state::AWAITING_APPROVAL.into(),
            message: format!(
                "{} already {} request {request_id} as {}; nothing changed",
                caller.name,
                if reject { "rejected" } else { "approved" },
                role.as_str()
            ),
            ..Default::default()
        });
    }
    let approvals = recorded.approvals;
    controller
        .audit(AuditEntry {
            actor: caller.actor(),
            action: if reject {
                "approval.rejected"
            } else {
                "approval.granted"
            }
            .into(),
            outcome: "ok".into(),
            environment: Some(pending.environment.clone()),
            procedure: Some(pending.plan.label.clone()),
            trace_id: Some(pending.trace_id.clone()),
            details: format!("request {request_id} as {}: {reason}", role.as_str()),
            ..Default::default()
        })
        .await;
    if reject {
        controller
            .store
            .decide_pending(request_id, request_state::REJECTED, None, now)
            .await
            .map_err(store_error)?;
        let why = format!("rejected by {}: {reason}", caller.name);
        requests::end_with(&controller, request_id, request_state::REJECTED, &why);
        return Ok(ApproveResponse {
            state: "rejected".into(),
            message: format!("request {request_id} rejected by {}: {reason}", caller.name),
            ..Default::default()
        });
    }
    let trace = pending_trace(&pending.trace_id);
    let check = GateCheck {
        environment: &pending.environment,
        plan_id: &pending.plan.plan_id,
        label: &pending.plan.label,
        actor: &pending.actor,
        attachments: gates::attachments(&pending.ticket, &pending.runbook, &pending.rollback_plan),
        approvals: &approvals,
        plan: &pending.plan,
        dry_run: Some(gates::DryRunContext {
            trace: &trace,
            agent_wait: Duration::from_secs(5),
        }),
    };
    match gates::check(&controller, check).await? {
        Verdict::AwaitingApproval(waiting_for) => Ok(ApproveResponse {
            state: "awaiting_approval".into(),
            message: format!("approval recorded; request {request_id} still waits: {waiting_for}"),
            ..Default::default()
        }),
        Verdict::Scheduled(when) => {
            let message = requests::schedule_approved(&controller, &pending, &when).await?;
            Ok(ApproveResponse {
                state: request_state::SCHEDULED.into(),
                message,
                trace_id: pending.trace_id,
                ..Default::default()
            })
        }
        Verdict::Passed(passed) => dispatch(controller, pending, passed).await,
    }
}

/// Starts the approved request as a rollout, which runs in the background;
/// the approver gets its id and can follow it (`approve --follow`).
async fn dispatch(
    controller: Arc<Controller>,
    pending: PendingRollout,
    gates: Vec<pgrollout_shared::proto::GateOutcome>,
) -> Result<ApproveResponse, Status> {
    let (request_id, trace_id) = (pending.request_id.clone(), pending.trace_id.clone());
    let rollout_id = requests::start_request(
        controller,
        pending,
        gates,
        request_state::AWAITING_APPROVAL,
        request_state::APPROVED,
        Duration::from_secs(5),
    )
    .await
    .map_err(StartError::into_status)?;
    Ok(ApproveResponse {
        state: "approved".into(),
        message: format!(
            "request {request_id} approved; rollout {rollout_id} started — follow it with `pgrollout status {request_id} --follow`"
        ),
        rollout_id,
        trace_id,
    })
}

/// The request's trace, continued by a new span.
pub(super) fn pending_trace(trace_id: &str) -> TraceParent {
    let mut trace = TraceParent::new_root();
    if TraceParent::parse(&format!("00-{trace_id}-{}-01", trace.span_id)).is_some() {
        trace.trace_id = trace_id.to_owned();
    }
    trace
}
