//! The controller's side of the gates: evaluate them for a request, audit
//! the verdict, and refuse (exit 1, nothing changed) when any gate fails.

use std::time::SystemTime;

use pgrollout_shared::proto::{EnvironmentGates, GateOutcome};
use tonic::Status;

use crate::engine::gates::{self, Attachments, GateInput, GateResult, GateState};
use crate::engine::Controller;
use crate::store::AuditEntry;

/// What a deploy request is checked for.
pub struct GateCheck<'a> {
    pub environment: &'a str,
    pub plan_id: &'a str,
    pub label: &'a str,
    pub actor: &'a str,
    pub attachments: Attachments,
}

/// Passes with the verdicts, or refuses with every failed gate named.
pub async fn check(
    controller: &Controller,
    request: GateCheck<'_>,
) -> Result<Vec<GateOutcome>, Status> {
    let results = evaluate(
        controller,
        request.environment,
        request.plan_id,
        &request.attachments,
    )
    .await?;
    let refusal = gates::refusal(&results);
    controller
        .audit(AuditEntry {
            actor: request.actor.to_owned(),
            action: if refusal.is_some() {
                "gates.refused"
            } else {
                "gates.passed"
            }
            .into(),
            outcome: if refusal.is_some() { "refused" } else { "ok" }.into(),
            environment: Some(request.environment.to_owned()),
            procedure: Some(request.label.to_owned()),
            details: format!("plan {}: {}", request.plan_id, summary(&results)),
            ..Default::default()
        })
        .await;
    match refusal {
        Some(message) => Err(Status::failed_precondition(message)),
        None => Ok(outcomes(&results)),
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
        let results = evaluate(controller, name, plan_id, attachments).await?;
        environments.push(EnvironmentGates {
            environment: name.clone(),
            gates: outcomes(&results),
        });
    }
    Ok(environments)
}

async fn evaluate(
    controller: &Controller,
    environment: &str,
    plan_id: &str,
    attachments: &Attachments,
) -> Result<Vec<GateResult>, Status> {
    let input = GateInput {
        environments: &controller.config.environments,
        environment,
        plan_id,
        attachments,
        now: SystemTime::now(),
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
            format!(
                "{} {}",
                r.gate.as_str(),
                if r.state == GateState::Passed {
                    "passed"
                } else {
                    "refused"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
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
