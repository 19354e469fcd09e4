//! Starting a request: claim it (compare-and-set from the state it waits
//! in), start its rollout, mark it with the rollout's id, and hand the
//! rollout's updates to the request's followers.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::{now_unix_ms, BatchOptions, JobKind};
use pgrollout_shared::proto::{rollout_update, GateOutcome};
use pgrollout_shared::traceparent::TraceParent;

use super::request_state;
use crate::engine::error::EngineError;
use crate::engine::rollout::RolloutRequest;
use crate::engine::Controller;
use crate::plan::deploy_order;
use crate::store::leases::Fence;
use crate::store::PendingRollout;

/// Why a request did not start.
pub enum StartError {
    /// Someone else moved it first (cancelled, started): its state now.
    NotClaimed(String),
    /// Claimed, but the rollout could not start (no agent, say); the request
    /// is back where it was.
    Failed(EngineError),
}

impl From<StartError> for EngineError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::NotClaimed(message) => EngineError::Refused(message),
            StartError::Failed(error) => error,
        }
    }
}

/// Claims the request (from `from`), starts its rollout, and marks it `done`
/// with the rollout's id. The scheduler claims with its lease's `fence`
/// (issue 18): an ex-leader's claim is refused by the store. The rollout runs in the background; its updates go
/// to the request's followers.
pub async fn start_request(
    controller: Arc<Controller>,
    pending: PendingRollout,
    gates: Vec<GateOutcome>,
    from: &str,
    done: &str,
    agent_wait: Duration,
    fence: Option<&Fence>,
) -> Result<String, StartError> {
    let id = pending.request_id.clone();
    // The claim names this controller: another settles the request only
    // once this one is dead (issue 18).
    let me = controller.identity.get().map(|me| me.id.as_str());
    let claimed = controller
        .store
        .claim_request_start(&id, &[from], me, fence, now_unix_ms())
        .await
        .map_err(|e| StartError::Failed(EngineError::store("access its store")(e)))?;
    if !claimed {
        let now = controller.store.pending_rollout(&id).await.ok().flatten();
        let state = now.map_or_else(|| "gone".to_owned(), |p| p.state);
        return Err(StartError::NotClaimed(format!(
            "request {id} is already {state}"
        )));
    }
    // What the operators signed for this request (issue 19), verbatim.
    let signatures = controller
        .store
        .signed_statements(&id)
        .await
        .map_err(|e| StartError::Failed(EngineError::store("access its store")(e)))?;
    let approvals = pgrollout_shared::job::SignedApprovals {
        request_id: if signatures.is_empty() {
            String::new()
        } else {
            id.clone()
        },
        signatures,
        ..Default::default()
    };
    let started = match rollout_request(&pending, gates, agent_wait, approvals) {
        // A fleet environment's deploy goes over its targets (issue 24).
        Ok(request) => crate::engine::launch::start(controller.clone(), request).await,
        Err(error) => Err(error),
    };
    let mut receiver = match started {
        Ok(receiver) => receiver,
        Err(error) => {
            // Nothing was offered: the request is back as it was.
            let _ = controller
                .store
                .move_request(
                    &id,
                    &[request_state::STARTING],
                    from,
                    None,
                    &error.to_string(),
                    now_unix_ms(),
                )
                .await;
            return Err(StartError::Failed(error));
        }
    };
    let mut rollout_id = String::new();
    if let Some(Ok(update)) = receiver.recv().await {
        if let Some(rollout_update::Body::Started(started)) = &update.body {
            rollout_id = started.rollout_id.clone();
        }
        controller.followers.publish(&id, update);
    }
    let recorded = controller
        .store
        .move_request(
            &id,
            &[request_state::STARTING],
            done,
            Some(&rollout_id),
            "",
            now_unix_ms(),
        )
        .await;
    // Nobody need stream this rollout: drain it to its end for followers.
    let drain = controller.clone();
    let drained_id = id.clone();
    tokio::spawn(async move {
        while let Some(update) = receiver.recv().await {
            if let Ok(update) = update {
                drain.followers.publish(&drained_id, update);
            }
        }
        drain.followers.end(&drained_id);
    });
    match recorded {
        Ok(_) => Ok(rollout_id),
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), request_id = %id, rollout_id = %rollout_id, "recording a started request failed");
            Err(StartError::Failed(EngineError::Internal(format!(
                "rollout {rollout_id} started but request {id} could not be marked so; see the controller's log"
            ))))
        }
    }
}

/// The rollout a request becomes: its plan, ordered by the controller, in
/// the request's trace.
fn rollout_request(
    pending: &PendingRollout,
    gates: Vec<GateOutcome>,
    agent_wait: Duration,
    approvals: pgrollout_shared::job::SignedApprovals,
) -> Result<RolloutRequest, EngineError> {
    let order = deploy_order(pending.plan.routines.clone())
        .map_err(|e| EngineError::Refused(e.to_string()))?;
    let view = Some(order.view());
    let trace = TraceParent::parse(&format!("00-{}-00f067aa0ba902b7-01", pending.trace_id))
        .unwrap_or_else(TraceParent::new_root);
    Ok(RolloutRequest {
        environment: pending.environment.clone(),
        plan: pending.plan.clone(),
        kind: JobKind::Deploy {
            routines: order.routines,
            batch: BatchOptions {
                continue_on_error: pending.continue_on_error,
                dependencies: order.dependencies,
                // The environment's after-deploy steps are set where every
                // rollout starts (`engine::after_deploy`).
                ..Default::default()
            },
        },
        actor: pending.actor.clone(),
        trace,
        agent_wait,
        gates,
        order: view,
        approvals,
        // A parked request keeps no fleet policy: a fleet halts on failure.
        fleet_policy: Default::default(),
    })
}
