//! Approvals (DESIGN §6): a deploy whose only unmet gates are approvals or a
//! stakeholder sign-off is parked as a request (`park.rs`); approvers decide
//! on it here; the decision that completes it starts the rollout — or
//! schedules it, when its window is closed (approvals first, then the
//! window). Approvals are bound to the request's plan id, and nobody
//! approves their own request.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::ApproveResponse;

use super::park::{end_with, pending_trace, schedule_approved};
use super::request_state;
use super::start::start_request;
use super::verdict::{self, requester_name, GateCheck, Verdict};
use crate::auth::Caller;
use crate::config::OperatorRole;
use crate::engine::error::EngineError;
use crate::engine::Controller;
use crate::store::{Approval, AuditEntry, PendingRollout};

/// Records `caller`'s decision and, when it completes the request, starts
/// the rollout.
pub async fn decide(
    controller: Arc<Controller>,
    caller: &Caller,
    request_id: &str,
    reject: bool,
    reason: &str,
    role: OperatorRole,
) -> Result<ApproveResponse, EngineError> {
    let store_error = EngineError::store("record the decision");
    let pending = controller
        .store
        .pending_rollout(request_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            EngineError::NotFound(format!("no request {request_id:?} awaits approval"))
        })?;
    if pending.state != "awaiting_approval" {
        return Err(EngineError::Refused(format!(
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
        return Err(EngineError::Forbidden(refusal));
    }
    if reject && reason.trim().is_empty() {
        return Err(EngineError::Invalid("a rejection needs --reason".into()));
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
        end_with(&controller, request_id, request_state::REJECTED, &why);
        return Ok(ApproveResponse {
            state: "rejected".into(),
            message: format!("request {request_id} rejected by {}: {reason}", caller.name),
            ..Default::default()
        });
    }
    let trace = pending_trace(&pending.trace_id);
    let check = GateCheck::of_pending(&pending, &approvals, &trace);
    match verdict::check(&controller, check).await? {
        Verdict::AwaitingApproval(waiting_for) => Ok(ApproveResponse {
            state: "awaiting_approval".into(),
            message: format!("approval recorded; request {request_id} still waits: {waiting_for}"),
            ..Default::default()
        }),
        Verdict::Scheduled(when) => {
            let message = schedule_approved(&controller, &pending, &when).await?;
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
) -> Result<ApproveResponse, EngineError> {
    let (request_id, trace_id) = (pending.request_id.clone(), pending.trace_id.clone());
    let rollout_id = start_request(
        controller,
        pending,
        gates,
        request_state::AWAITING_APPROVAL,
        request_state::APPROVED,
        Duration::from_secs(5),
        None,
    )
    .await?;
    Ok(ApproveResponse {
        state: "approved".into(),
        message: format!(
            "request {request_id} approved; rollout {rollout_id} started — follow it with `pgrollout status {request_id} --follow`"
        ),
        rollout_id,
        trace_id,
    })
}
