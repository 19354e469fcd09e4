//! What `pgrollout status p-…` and `pgrollout rollouts` show of requests:
//! a waiting request's gates evaluated now (passed, pending, scheduled,
//! failed, with reasons), so the operator sees what is still missing.

use pgrollout_shared::proto::RolloutStatus;
use tonic::Status;

use crate::api::status::store_failure;
use crate::engine::requests::{self as gates, request_state, GateCheck};
use crate::engine::Controller;

/// A request shaped as a rollout status (`is_request`), or `None`.
pub async fn request_status(
    controller: &Controller,
    request_id: &str,
) -> Result<Option<RolloutStatus>, Status> {
    let store = &controller.store;
    let Some(pending) = store
        .pending_rollout(request_id)
        .await
        .map_err(store_failure("access its store"))?
    else {
        return Ok(None);
    };
    let schedule = store
        .request_schedule(request_id)
        .await
        .map_err(store_failure("access its store"))?
        .unwrap_or_default();
    let waiting = matches!(
        pending.state.as_str(),
        request_state::AWAITING_APPROVAL | request_state::SCHEDULED | request_state::STARTING
    );
    let gates = if waiting {
        let approvals = store
            .request_approvals(request_id, &pending.plan.plan_id)
            .await
            .map_err(store_failure("access its store"))?;
        let check = GateCheck {
            environment: &pending.environment,
            plan_id: &pending.plan.plan_id,
            label: &pending.plan.label,
            actor: &pending.actor,
            attachments: gates::attachments(
                &pending.ticket,
                &pending.runbook,
                &pending.rollback_plan,
            ),
            approvals: &approvals,
            plan: &pending.plan,
            dry_run: None,
        };
        gates::evaluate_now(controller, &check).await?
    } else {
        Vec::new()
    };
    let environment = controller.config.environments.get(&pending.environment);
    Ok(Some(RolloutStatus {
        rollout_id: pending.request_id.clone(),
        kind: "deploy".into(),
        environment: pending.environment.clone(),
        zone: controller
            .config
            .zone_of(&pending.environment)
            .unwrap_or_default(),
        target: environment.map(|e| e.target.clone()).unwrap_or_default(),
        actor: pending.actor.clone(),
        trace_id: pending.trace_id.clone(),
        state: pending.state.clone(),
        created_at_unix_ms: schedule.created_at,
        plan_id: pending.plan.plan_id.clone(),
        commit_sha: pending.plan.commit_sha.clone(),
        label: pending.plan.label.clone(),
        routine_count: pending.plan.routines.len() as u32,
        routine_identities: pending
            .plan
            .routines
            .iter()
            .map(|r| r.identity.to_string())
            .collect(),
        gates,
        is_request: true,
        run_at_unix_ms: match pending.state.as_str() {
            request_state::SCHEDULED => schedule.run_at.unwrap_or_default(),
            _ => 0,
        },
        window: schedule.window,
        request_rollout_id: pending.rollout_id.unwrap_or_default(),
        request_note: match schedule.start_attempts {
            0 => schedule.note,
            n => format!("{} ({n} failed start attempt(s))", schedule.note),
        },
        ..Default::default()
    }))
}

/// Rollouts and the requests that did not become rollouts, newest first.
pub async fn list_with_requests(
    controller: &Controller,
    mut rollouts: Vec<RolloutStatus>,
    environment: &str,
    state: &str,
    limit: u32,
) -> Result<Vec<RolloutStatus>, Status> {
    let requests = controller
        .store
        .list_requests(environment, state, limit)
        .await
        .map_err(store_failure("access its store"))?;
    rollouts.extend(requests);
    rollouts.sort_by_key(|r| std::cmp::Reverse(r.created_at_unix_ms));
    rollouts.truncate(limit as usize);
    Ok(rollouts)
}
