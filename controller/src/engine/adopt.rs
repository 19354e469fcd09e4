//! Adopting drift (issue 20): a plan-less `adopt` rollout through
//! `operations::start` (agent of the zone, store, audit `adopt.started`,
//! offer, relay), plus the audit entry the issue asks for: `drift.adopted`,
//! naming each routine the agent recorded, the actor and the reason — written
//! when the result arrives, so it names what was adopted, not what was asked.

use std::sync::Arc;

use pgrollout_shared::proto::{rollout_update::Body, JobResult, Outcome, RolloutUpdate};
use tokio::sync::mpsc;

use super::error::EngineError;
use super::operations::{self, OperationRequest};
use super::updates::{UpdateSender, Updates};
use super::Controller;
use crate::store::AuditEntry;

/// Starts the adoption; its updates arrive on the returned receiver.
pub async fn start(
    controller: Arc<Controller>,
    request: OperationRequest,
    reason: String,
) -> Result<Updates, EngineError> {
    let context = Context {
        controller: controller.clone(),
        environment: request.environment.clone(),
        label: request.label.clone(),
        actor: request.actor.clone(),
        reason,
    };
    let inner = operations::start(controller, request).await?;
    let (out, receiver) = mpsc::channel(256);
    tokio::spawn(forward(context, inner, out));
    Ok(receiver)
}

struct Context {
    controller: Arc<Controller>,
    environment: String,
    label: String,
    actor: String,
    reason: String,
}

/// Relays every update; audits the result before relaying it, so an
/// operator who reads the audit log right after the command sees the entry.
/// Keeps going when the operator hangs up.
async fn forward(context: Context, mut inner: Updates, out: UpdateSender) {
    let mut rollout: Option<(String, String)> = None;
    while let Some(update) = inner.recv().await {
        if let Ok(RolloutUpdate { body: Some(body) }) = &update {
            match body {
                Body::Started(started) => {
                    rollout = Some((started.rollout_id.clone(), started.trace_id.clone()))
                }
                Body::Finished(result) => audit(&context, rollout.as_ref(), result).await,
                _ => {}
            }
        }
        let _ = out.send(update).await;
    }
}

async fn audit(context: &Context, rollout: Option<&(String, String)>, result: &JobResult) {
    if result.outcome() != Outcome::Succeeded || result.restored.is_empty() {
        return;
    }
    let routines: Vec<String> = result
        .restored
        .iter()
        .map(|r| format!("{} ({})", r.identity, r.source))
        .collect();
    context
        .controller
        .audit(AuditEntry {
            actor: context.actor.clone(),
            action: "drift.adopted".into(),
            outcome: "ok".into(),
            rollout_id: rollout.map(|(id, _)| id.clone()),
            environment: Some(context.environment.clone()),
            procedure: Some(context.label.clone()),
            trace_id: rollout.map(|(_, trace)| trace.clone()),
            details: format!(
                "adopted {} routine(s) changed by hand: {}; reason: {}",
                routines.len(),
                routines.join(", "),
                context.reason
            ),
        })
        .await;
}
