//! Approvals (DESIGN §6): a deploy whose only unmet gates are approvals or a
//! stakeholder sign-off is parked as a request; approvers decide on it; the
//! decision that completes it starts the rollout. Approvals are bound to the
//! request's plan id, and nobody approves their own request.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::{now_unix_ms, BatchOptions, JobKind};
use pgrollout_shared::proto::{rollout_update, ApproveResponse};
use pgrollout_shared::routine::routines_from_wire;
use pgrollout_shared::traceparent::TraceParent;
use tonic::Status;

use super::gates::{self, requester_name, GateCheck, Verdict};
use crate::auth::Caller;
use crate::config::OperatorRole;
use crate::engine::rollout::{self, RolloutRequest};
use crate::engine::{new_id, Controller};
use crate::plan::deploy_order;
use crate::store::{Approval, AuditEntry, PendingRollout};

/// What the request asked for besides the plan.
pub struct Parked {
    pub continue_on_error: bool,
    pub ticket: String,
    pub runbook: String,
    pub rollback_plan: String,
}

/// Parks a request that waits only for people; the returned status tells the
/// operator its id and what it waits for (exit 1: nothing changed yet).
pub async fn park(
    controller: &Controller,
    request: &RolloutRequest,
    parked: Parked,
    waiting_for: &str,
) -> Status {
    let pending = PendingRollout {
        request_id: new_id("p"),
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
        return Status::internal("the controller could not record the request; see its log");
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
    Status::failed_precondition(format!(
        "request {} awaits approval and changed nothing yet ({waiting_for}); an approver runs \
         `pgrollout approve {}`, and the last approval it needs starts the rollout",
        pending.request_id, pending.request_id
    ))
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
        return Err(Status::permission_denied(format!(
            "operator {} requested {request_id} and cannot approve it; another {} must",
            caller.name,
            role.as_str()
        )));
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
    let approvals = controller
        .store
        .record_approval(request_id, &pending.plan.plan_id, &decision, reason, now)
        .await
        .map_err(store_error)?;
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
            .decide_pending(request_id, "rejected", None, now)
            .await
            .map_err(store_error)?;
        return Ok(ApproveResponse {
            state: "rejected".into(),
            message: format!("request {request_id} rejected by {}: {reason}", caller.name),
            ..Default::default()
        });
    }
    let check = GateCheck {
        environment: &pending.environment,
        plan_id: &pending.plan.plan_id,
        label: &pending.plan.label,
        actor: &pending.actor,
        attachments: gates::attachments(&pending.ticket, &pending.runbook, &pending.rollback_plan),
        approvals: &approvals,
    };
    match gates::check(&controller, check).await? {
        Verdict::AwaitingApproval(waiting_for) => Ok(ApproveResponse {
            state: "awaiting_approval".into(),
            message: format!("approval recorded; request {request_id} still waits: {waiting_for}"),
            ..Default::default()
        }),
        Verdict::Passed(passed) => dispatch(controller, pending, passed).await,
    }
}

/// Starts the approved request as a rollout and follows it in the
/// background; the approver gets its id, and `status`/`log` show the rest.
async fn dispatch(
    controller: Arc<Controller>,
    pending: PendingRollout,
    gates: Vec<pgrollout_shared::proto::GateOutcome>,
) -> Result<ApproveResponse, Status> {
    let routines = routines_from_wire(pending.plan.routines.clone())
        .map_err(|e| Status::internal(e.to_string()))?;
    let order = deploy_order(routines).map_err(|e| Status::failed_precondition(e.to_string()))?;
    let trace = TraceParent::parse(&format!(
        "00-{}-{}-01",
        pending.trace_id, "00f067aa0ba902b7"
    ))
    .unwrap_or_else(TraceParent::new_root);
    let request = RolloutRequest {
        environment: pending.environment.clone(),
        plan: pending.plan.clone(),
        kind: JobKind::Deploy {
            routines: order.routines,
            batch: BatchOptions {
                continue_on_error: pending.continue_on_error,
                dependencies: order.dependencies,
            },
        },
        actor: pending.actor.clone(),
        trace,
        agent_wait: Duration::from_secs(5),
        gates,
    };
    // The approved rollout continues the request's trace, under a rollout
    // span of its own (the request's span ended when it was parked).
    let span = crate::telemetry::spans::rollout_span(
        "deploy",
        &request.environment,
        &request.plan.label,
        &request.trace.to_string(),
    );
    let started = rollout::start(controller.clone(), request);
    let mut receiver = crate::telemetry::spans::in_span(span, started).await?;
    let mut rollout_id = String::new();
    if let Some(Ok(update)) = receiver.recv().await {
        if let Some(rollout_update::Body::Started(started)) = update.body {
            rollout_id = started.rollout_id;
        }
    }
    // Nobody streams this rollout: drain its updates so it runs to the end.
    tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    controller
        .store
        .decide_pending(
            &pending.request_id,
            "approved",
            Some(&rollout_id),
            now_unix_ms(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %anyhow::Error::from(e), "closing an approved request failed");
            Status::internal(
                "the rollout started but the request could not be closed; see the controller's log",
            )
        })?;
    Ok(ApproveResponse {
        state: "approved".into(),
        message: format!(
            "request {} approved; rollout {rollout_id} started — follow it with `pgrollout status {rollout_id}`",
            pending.request_id
        ),
        rollout_id,
        trace_id: pending.trace_id,
    })
}
