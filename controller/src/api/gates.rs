//! The controller's side of the gates: evaluate them for a request, audit
//! the verdict, and refuse (exit 1, nothing changed) when any gate fails, or
//! park the request when only approvals are missing.

use std::time::SystemTime;

use pgrollout_shared::proto::{EnvironmentGates, GateOutcome};
use tonic::Status;
use tracing::Instrument;

use crate::engine::gates::{self, Attachments, GateInput, GateResult, GateState};
use crate::engine::Controller;
use crate::store::{Approval, AuditEntry};

/// What a deploy request is checked for.
pub struct GateCheck<'a> {
    pub environment: &'a str,
    pub plan_id: &'a str,
    pub label: &'a str,
    pub actor: &'a str,
    pub attachments: Attachments,
    /// Decisions recorded on this request so far.
    pub approvals: &'a [Approval],
}

/// The gates' answer to a request.
pub enum Verdict {
    /// Every gate passed: dispatch, showing these.
    Passed(Vec<GateOutcome>),
    /// Nothing failed, but approvals or a sign-off are still to come.
    AwaitingApproval(String),
}

/// Passes, waits for people, or refuses with every failed gate named.
pub async fn check(controller: &Controller, request: GateCheck<'_>) -> Result<Verdict, Status> {
    let span = crate::telemetry::spans::gates_span(request.environment);
    let results = evaluate(controller, &request)
        .instrument(span.clone())
        .await?;
    let refusal = gates::refusal(&results);
    let pending: Vec<String> = results
        .iter()
        .filter(|r| r.state == GateState::Pending)
        .map(|r| format!("gate {}: {}", r.gate.as_str(), r.reason))
        .collect();
    let (action, outcome) = match (&refusal, pending.is_empty()) {
        (Some(_), _) => ("gates.refused", "refused"),
        (None, false) => ("gates.pending", "pending"),
        (None, true) => ("gates.passed", "ok"),
    };
    span.record("pgrollout.verdict", outcome);
    drop(span);
    controller
        .audit(AuditEntry {
            actor: request.actor.to_owned(),
            action: action.into(),
            outcome: outcome.into(),
            environment: Some(request.environment.to_owned()),
            procedure: Some(request.label.to_owned()),
            details: format!("plan {}: {}", request.plan_id, summary(&results)),
            ..Default::default()
        })
        .await;
    match refusal {
        Some(message) => Err(Status::failed_precondition(message)),
        None if !pending.is_empty() => Ok(Verdict::AwaitingApproval(pending.join("; "))),
        None => Ok(Verdict::Passed(outcomes(&results))),
    }
}

/// Every environment's verdict on a plan, for `pgrollout plan`.
pub async fn evaluate_everywhere(
    controller: &Controller,
    plan_id: &str,
    attachments: &Attachments,
) -> Result<Vec<EnvironmentGates>, Status> {
    let mut environments = Vec::new();
    for name in controller.config.environments.keys() {
        let request = GateCheck {
            environment: name,
            plan_id,
            label: "",
            actor: "",
            attachments: attachments.clone(),
            approvals: &[],
        };
        environments.push(EnvironmentGates {
            environment: name.clone(),
            gates: outcomes(&evaluate(controller, &request).await?),
        });
    }
    Ok(environments)
}

async fn evaluate(
    controller: &Controller,
    request: &GateCheck<'_>,
) -> Result<Vec<GateResult>, Status> {
    let input = GateInput {
        environments: &controller.config.environments,
        environment: request.environment,
        plan_id: request.plan_id,
        attachments: &request.attachments,
        now: SystemTime::now(),
        approvals: request.approvals,
        requester: requester_name(request.actor),
    };
    gates::evaluate(&controller.store, &input)
        .await
        .map_err(|e| {
            tracing::error!(error = %anyhow::Error::from(e), "gate evaluation failed");
            Status::internal("the controller could not evaluate the gates; see its log")
        })
}

fn outcomes(results: &[GateResult]) -> Vec<GateOutcome> {
    results
        .iter()
        .map(|r| GateOutcome {
            gate: r.gate.as_str().to_owned(),
            passed: r.state == GateState::Passed,
            reason: r.reason.clone(),
        })
        .collect()
}

fn summary(results: &[GateResult]) -> String {
    if results.is_empty() {
        return "no gates configured".into();
    }
    results
        .iter()
        .map(|r| {
            let verdict = match r.state {
                GateState::Passed => "passed",
                GateState::Pending => "pending",
                GateState::Failed => "refused",
            };
            format!("{} {verdict}", r.gate.as_str())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operator name inside an actor string (`alice (unverified)` → `alice`).
pub fn requester_name(actor: &str) -> &str {
    actor.split(" (").next().unwrap_or(actor)
}

/// Attachments as the request carries them (empty = absent).
pub fn attachments(ticket: &str, runbook: &str, rollback_plan: &str) -> Attachments {
    let present = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    Attachments {
        ticket: present(ticket),
        runbook: present(runbook),
        rollback_plan: present(rollback_plan),
    }
}
