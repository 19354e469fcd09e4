//! Rollouts that carry no plan of their own: rollback, disable, enable and
//! history. They go through the same path as a deploy (`rollout::start`:
//! agent of the zone, store, audit `<kind>.started`, offer, relay), with an
//! *operation record* in the plan's place — no routines, an id derived from
//! the request — because every rollout row points at a plan.
//!
//! Around that path: an emergency rollback gets its own audit entry with the
//! operator's reason, and a successful rollback marks the rollouts it undid
//! completely as `rolled_back`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::JobKind;
use pgrollout_shared::proto::{
    rollout_update::Body, JobResult, Outcome, RolloutStarted, RolloutUpdate,
};
use pgrollout_shared::traceparent::TraceParent;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::error::EngineError;
use super::rollout::{self, RolloutRequest};
use super::updates::{UpdateSender, Updates};
use super::Controller;
use crate::domain::plan::Plan;
use crate::store::AuditEntry;

/// A validated request for a plan-less rollout.
pub struct OperationRequest {
    pub environment: String,
    /// The operator's `<procedure>`, or the undone rollout's label.
    pub label: String,
    pub kind: JobKind,
    pub actor: String,
    pub trace: TraceParent,
    pub agent_wait: Duration,
    /// What the operator asked, for the operation record's id.
    pub description: String,
    /// The operator's signed statement (issue 19), forwarded verbatim.
    pub approvals: pgrollout_shared::job::SignedApprovals,
}

/// Starts the operation; its updates arrive on the returned receiver.
pub async fn start(
    controller: Arc<Controller>,
    request: OperationRequest,
) -> Result<Updates, EngineError> {
    let (inner, context) = prepare(&controller, request);
    let inner = rollout::start(controller, inner).await?;
    Ok(forwarded(context, inner))
}

/// [`start`] on one target of a fleet (issue 24): a fleet's rollback undoes
/// each target's rollout there.
pub async fn start_on(
    controller: Arc<Controller>,
    request: OperationRequest,
    placement: rollout::Placement,
) -> Result<Updates, EngineError> {
    let (inner, context) = prepare(&controller, request);
    let inner = rollout::start_on(controller, inner, Some(placement)).await?;
    Ok(forwarded(context, inner))
}

fn prepare(controller: &Arc<Controller>, request: OperationRequest) -> (RolloutRequest, Context) {
    let emergency = match &request.kind {
        JobKind::Rollback(spec) => spec.emergency.clone(),
        _ => None,
    };
    let plan = Plan::operation(
        operation_id(request.kind.name(), &request.description),
        request.label.clone(),
    );
    let context = Context {
        controller: controller.clone(),
        environment: request.environment.clone(),
        label: request.label.clone(),
        actor: request.actor.clone(),
        emergency,
    };
    let inner = RolloutRequest {
        environment: request.environment,
        plan,
        kind: request.kind,
        actor: request.actor,
        trace: request.trace,
        agent_wait: request.agent_wait,
        gates: Vec::new(),
        order: None,
        approvals: request.approvals,
        fleet_policy: Default::default(),
    };
    (inner, context)
}

fn forwarded(context: Context, inner: Updates) -> Updates {
    let (out, receiver) = mpsc::channel(256);
    tokio::spawn(forward(context, inner, out));
    receiver
}

struct Context {
    controller: Arc<Controller>,
    environment: String,
    label: String,
    actor: String,
    emergency: Option<String>,
}

/// Relays every update; audits an emergency's start. (What a rollback's
/// result means for the rollouts it undid is recorded by the controller that
/// records the result, [`mark_undone`]: the requester may be dead by then.)
async fn forward(context: Context, mut inner: Updates, out: UpdateSender) {
    while let Some(update) = inner.recv().await {
        if let Ok(RolloutUpdate {
            body: Some(Body::Started(started)),
        }) = &update
        {
            audit_emergency(&context, started).await
        }
        let _ = out.send(update).await;
    }
}

async fn audit_emergency(context: &Context, started: &RolloutStarted) {
    let Some(reason) = &context.emergency else {
        return;
    };
    context
        .controller
        .audit(AuditEntry {
            actor: context.actor.clone(),
            action: "rollback.emergency".into(),
            outcome: "ok".into(),
            rollout_id: Some(started.rollout_id.clone()),
            environment: Some(context.environment.clone()),
            procedure: Some(context.label.clone()),
            trace_id: Some(started.trace_id.clone()),
            details: format!(
                "EMERGENCY rollback, reason: {reason}; smoke tests skipped (a rollback asks for no approval in any \
                 environment); job {}",
                started.job_id
            ),
        })
        .await;
}

/// Marks as `rolled_back` each rollout whose every change this rollback
/// undid, and audits it. Called by whichever controller records the
/// rollback's result (`api/agent_link.rs`, once per result): on a shared store
/// the controller that started the rollback may have died meanwhile.
/// `rollout` is the rollback's own rollout.
pub async fn mark_undone(
    controller: &Controller,
    rollout: &crate::store::JobRollout,
    result: &JobResult,
) {
    if rollout.kind != "rollback" {
        return;
    }
    if result.outcome() != Outcome::Succeeded && result.outcome() != Outcome::SmokeFailed {
        return;
    }
    let mut undone: BTreeMap<&str, usize> = BTreeMap::new();
    for restored in &result.restored {
        if !restored.undoes_rollout_id.is_empty() {
            *undone.entry(&restored.undoes_rollout_id).or_default() += 1;
        }
    }
    if undone.is_empty() {
        return;
    }
    let store = &controller.store;
    for (rollout_id, count) in undone {
        let results = match store.rollout_results(rollout_id).await {
            Ok(results) => results,
            Err(error) => {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), rollout_id, "reading a rollout's results to mark it rolled back failed");
                continue;
            }
        };
        let changes: usize = results
            .iter()
            .filter_map(|bytes| JobResult::decode(bytes.as_slice()).ok())
            .map(|r| {
                // A deploy's changes are applied, an operation's restored.
                r.applied.iter().filter(|a| a.change != "unchanged").count()
                    + r.restored
                        .iter()
                        .filter(|x| x.change != "unchanged")
                        .count()
            })
            .sum();
        if changes == 0 || count < changes {
            continue;
        }
        match store.mark_rolled_back(rollout_id).await {
            Ok(true) => {
                controller
                    .audit(AuditEntry {
                        actor: rollout.actor.clone(),
                        action: "rollout.rolled_back".into(),
                        outcome: "ok".into(),
                        rollout_id: Some(rollout_id.to_owned()),
                        environment: Some(rollout.environment.clone()),
                        procedure: Some(rollout.label.clone()),
                        trace_id: None,
                        details: format!(
                            "all {changes} change(s) undone by rollback job {}",
                            result.job_id
                        ),
                    })
                    .await
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), rollout_id, "marking a rollout rolled back failed")
            }
        }
    }
}

/// `<kind>-<hex>`: an id for the operation record that stands in for a plan.
fn operation_id(kind: &str, description: &str) -> String {
    let digest = Sha256::digest(format!("pgrollout-operation-v1\n{kind}\n{description}"));
    format!("{kind}-{}", &hex::encode(digest)[..32])
}
