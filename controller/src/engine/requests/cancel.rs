//! `pgrollout cancel p-…`: a request that awaits approval or is scheduled is
//! cancelled before anything ran. Who may: the operator who requested it,
//! or an approver (who could have rejected it) or admin. A rollout that
//! already started cannot be cancelled: it is rolled back instead.

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::CancelResponse;

use super::park::end_with;
use super::request_state;
use super::verdict::requester_name;
use crate::auth::Caller;
use crate::config::OperatorRole;
use crate::engine::error::EngineError;
use crate::engine::Controller;
use crate::store::AuditEntry;

pub async fn cancel(
    controller: &Controller,
    caller: &Caller,
    request_id: &str,
    reason: &str,
) -> Result<CancelResponse, EngineError> {
    let store = &controller.store;
    let store_failure = EngineError::store("access its store");
    let Some(pending) = store
        .pending_rollout(request_id)
        .await
        .map_err(store_failure)?
    else {
        if store
            .rollout_status(request_id)
            .await
            .map_err(store_failure)?
            .is_some()
        {
            return Err(EngineError::Refused(format!(
                "{request_id} is a rollout, which already started; it cannot be cancelled — undo it with \
                 `pgrollout rollback --rollout {request_id}`"
            )));
        }
        return Err(EngineError::NotFound(format!(
            "no request {request_id:?}; `pgrollout rollouts --state scheduled` lists scheduled ones"
        )));
    };
    let allowed = if caller.name == requester_name(&pending.actor) {
        caller.require(OperatorRole::Deployer, "cancel their own request")
    } else {
        caller.require(
            OperatorRole::Approver,
            &format!("cancel a request of {}", requester_name(&pending.actor)),
        )
    };
    if let Err(refusal) = allowed {
        controller
            .audit(AuditEntry {
                actor: caller.actor(),
                action: "auth.denied".into(),
                outcome: "refused".into(),
                rollout_id: Some(request_id.to_owned()),
                details: format!("cancel: {}", refusal.message()),
                ..Default::default()
            })
            .await;
        // The role check is the operator's: its text is the refusal.
        return Err(EngineError::Forbidden(refusal.message().to_owned()));
    }
    let note = if reason.trim().is_empty() {
        format!("cancelled by {}", caller.name)
    } else {
        format!("cancelled by {}: {}", caller.name, reason.trim())
    };
    let cancelled = store
        .move_request(
            request_id,
            &[request_state::AWAITING_APPROVAL, request_state::SCHEDULED],
            request_state::CANCELLED,
            None,
            &note,
            now_unix_ms(),
        )
        .await
        .map_err(store_failure)?;
    if !cancelled {
        let now = store
            .pending_rollout(request_id)
            .await
            .map_err(store_failure)?
            .unwrap_or(pending);
        let rollout = now
            .rollout_id
            .as_deref()
            .map(|r| format!(" as rollout {r}; undo it with `pgrollout rollback --rollout {r}`"))
            .unwrap_or_default();
        return Err(EngineError::Refused(format!(
            "request {request_id} is already {}{rollout}",
            now.state
        )));
    }
    let was = pending.state.clone();
    controller
        .audit(AuditEntry {
            actor: caller.actor(),
            action: "rollout.cancelled".into(),
            outcome: "ok".into(),
            rollout_id: Some(request_id.to_owned()),
            environment: Some(pending.environment.clone()),
            procedure: Some(pending.plan.label.clone()),
            trace_id: Some(pending.trace_id.clone()),
            details: format!("request {request_id} ({was}) {note}; nothing ran"),
        })
        .await;
    end_with(controller, request_id, request_state::CANCELLED, &note);
    controller.schedule_changed.notify_one();
    Ok(CancelResponse {
        state: request_state::CANCELLED.into(),
        message: format!("request {request_id} ({was}) {note}; nothing ran"),
    })
}
