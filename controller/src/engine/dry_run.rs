//! The syntax gate's second half: a `check` job on the environment's
//! database — every routine of the plan applied, in deploy order, inside a
//! transaction the agent always rolls back, plus plpgsql_check findings
//! where that extension is installed.
//!
//! It runs just before the deploy is dispatched, after every other gate has
//! passed (so a deploy that waits for approval is checked when the last
//! approval arrives, against the database as it is then), on an agent of
//! the same zone and target as the deploy: the same database. It is a
//! rollout of its own (kind `check`), recorded and audited like any other.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::{JobKind, SignedApprovals};
use pgrollout_shared::proto::{rollout_update::Body, JobResult, Outcome};
use pgrollout_shared::test_reports::finding_line;
use pgrollout_shared::traceparent::TraceParent;

use super::error::EngineError;
use super::gates::GateResult;
use super::rollout::{self, RolloutRequest};
use super::Controller;
use crate::config::GateName;
use crate::domain::plan::Plan;
use crate::plan::deploy_order;
use tracing::Instrument;

/// Where and for whom the dry run runs.
pub struct DryRun<'a> {
    pub environment: &'a str,
    pub plan: &'a Plan,
    pub actor: &'a str,
    /// The deploy's trace: the dry run is a child span of it.
    pub trace: &'a TraceParent,
    pub agent_wait: Duration,
    /// The deploy's signed statements (issue 19): an agent with `[approvals]`
    /// runs a check only of content its requester signed. A parked request's
    /// come with its id only, and are read from the store here.
    pub approvals: SignedApprovals,
}

/// Runs the check job and turns its result into the syntax gate's verdict.
/// A refusal to start (no agent connected) is the caller's error, as it
/// would be for the deploy itself.
pub async fn run(
    controller: &Arc<Controller>,
    dry_run: DryRun<'_>,
) -> Result<GateResult, EngineError> {
    let order = deploy_order(dry_run.plan.routines.clone())
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let mut approvals = dry_run.approvals.clone();
    if approvals.signatures.is_empty() && !approvals.request_id.is_empty() {
        approvals.signatures = controller
            .store
            .signed_statements(&approvals.request_id)
            .await
            .map_err(EngineError::store("access its store"))?;
    }
    if approvals.signatures.is_empty() {
        approvals.request_id.clear();
    }
    let request = RolloutRequest {
        environment: dry_run.environment.to_owned(),
        plan: dry_run.plan.clone(),
        kind: JobKind::Check {
            routines: order.routines,
        },
        actor: dry_run.actor.to_owned(),
        trace: dry_run.trace.child(),
        agent_wait: dry_run.agent_wait,
        gates: Vec::new(),
        order: None,
        approvals,
        fleet_policy: Default::default(),
    };
    // Its own rollout span, beside the deploy's: the dry run is a rollout of
    // its own, with its own id, in the same trace.
    let span = crate::telemetry::spans::rollout_span(
        "check",
        dry_run.environment,
        &dry_run.plan.label,
        &request.trace.to_string(),
    );
    let started = rollout::start(controller.clone(), request)
        .instrument(span.clone())
        .await;
    let mut updates = match started {
        Ok(updates) => updates,
        Err(error) => {
            // Recorded on the span as a refused operator call is.
            span.record("pgrollout.outcome", error.span_outcome());
            span.record("otel.status_code", "error");
            return Err(error);
        }
    };
    let mut rollout_id = String::new();
    while let Some(update) = updates.recv().await {
        match update?.body {
            Some(Body::Started(started)) => rollout_id = started.rollout_id,
            Some(Body::Finished(result)) => {
                return Ok(verdict(dry_run.environment, &rollout_id, &result))
            }
            // A dry run never parks: its gates were evaluated by the caller.
            Some(Body::Event(_))
            | Some(Body::Parked(_))
            | Some(Body::Fleet(_))
            | Some(Body::InDoubt(_))
            | None => {}
        }
    }
    Ok(GateResult::failed(
        GateName::Syntax,
        format!("the dry run (rollout {rollout_id}) ended without a result; the gate fails closed"),
    ))
}

/// Passed with what was checked, or failed with every error's file, routine
/// and line.
pub fn verdict(environment: &str, rollout_id: &str, result: &JobResult) -> GateResult {
    let gate = GateName::Syntax;
    let parsed = "parsed by PostgreSQL's parser";
    match result.outcome() {
        Outcome::Succeeded => {
            let warnings: Vec<String> = result.findings.iter().map(finding_line).collect();
            let plpgsql_check = match (result.warnings.first(), warnings.is_empty()) {
                (Some(skipped), _) => skipped.clone(),
                (None, true) => "plpgsql_check found nothing".to_owned(),
                (None, false) => format!("plpgsql_check warnings: {}", warnings.join("; ")),
            };
            GateResult::passed(
                gate,
                format!(
                    "{parsed}; dry-run apply on {environment}'s database passed and was rolled back \
                     (rollout {rollout_id}); {plpgsql_check}"
                ),
            )
        }
        // Refused before it ran (the agent's approval policy, issue 19): no
        // finding, the agent's reason.
        Outcome::ValidationFailed if result.findings.is_empty() => GateResult::failed(
            gate,
            format!(
                "the dry run on {environment}'s database was refused by its agent (rollout {rollout_id}): {}",
                result.message
            ),
        ),
        Outcome::ValidationFailed => {
            let errors: Vec<String> = result
                .findings
                .iter()
                .filter(|f| f.level == "error")
                .map(finding_line)
                .collect();
            GateResult::failed(
                gate,
                format!(
                    "the dry-run apply on {environment}'s database (rollout {rollout_id}, rolled back) found {} \
                     error(s): {}",
                    errors.len(),
                    errors.join("; ")
                ),
            )
        }
        _ => GateResult::failed(
            gate,
            format!(
                "the dry-run apply on {environment}'s database could not complete (rollout {rollout_id}): {}; \
                 the gate fails closed",
                result.message
            ),
        ),
    }
}
