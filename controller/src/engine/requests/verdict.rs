//! The gates' verdict on a request: evaluate them for a request, audit
//! the verdict, and refuse (exit 1, nothing changed) when any gate fails,
//! park the request when approvals are missing, or schedule it when only a
//! time window is closed. Approvals come first: a request waiting for both
//! is parked, and scheduled once the last approval is in. When everything
//! else passed and the environment has the syntax gate, the dry-run `check`
//! job runs on its database last, just before dispatch.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgrollout_shared::proto::{EnvironmentGates, GateOutcome};
use pgrollout_shared::traceparent::TraceParent;
use tracing::Instrument;

use crate::config::GateName;
use crate::domain::plan::Plan;
use crate::engine::dry_run::{self, DryRun};
use crate::engine::error::EngineError;
use crate::engine::gates::{self, Attachments, GateInput, GateResult, GateState};
use crate::engine::Controller;
use crate::store::{Approval, AuditEntry, PendingRollout};

/// What a deploy request is checked for.
pub struct GateCheck<'a> {
    pub environment: &'a str,
    pub plan_id: &'a str,
    pub label: &'a str,
    pub actor: &'a str,
    pub attachments: Attachments,
    /// Decisions recorded on this request so far.
    pub approvals: &'a [Approval],
    /// The plan: its routines say which watches, probes and pgTAP files
    /// gates need.
    pub plan: &'a Plan,
    /// How to run the syntax gate's dry run; `None` evaluates without
    /// running anything on a database (`pgrollout plan`, `status p-…`).
    pub dry_run: Option<DryRunContext<'a>>,
}

impl<'a> GateCheck<'a> {
    /// A parked request checked again — at an approval or at its scheduled
    /// time — with the decisions recorded so far and a dry run under its own
    /// trace, as at its first check.
    pub fn of_pending(
        pending: &'a PendingRollout,
        approvals: &'a [Approval],
        trace: &'a TraceParent,
    ) -> Self {
        GateCheck {
            environment: &pending.environment,
            plan_id: &pending.plan.plan_id,
            label: &pending.plan.label,
            actor: &pending.actor,
            attachments: attachments(&pending.ticket, &pending.runbook, &pending.rollback_plan),
            approvals,
            plan: &pending.plan,
            dry_run: Some(DryRunContext {
                trace,
                agent_wait: Duration::from_secs(5),
                // Its signed statements are read from the store by the
                // dry run (issue 19: the agent checks them on the check job).
                approvals: pgrollout_shared::job::SignedApprovals {
                    request_id: pending.request_id.clone(),
                    signatures: Vec::new(),
                    ..Default::default()
                },
            }),
        }
    }
}

/// The deploy's trace and agent wait, which its dry run shares.
pub struct DryRunContext<'a> {
    pub trace: &'a TraceParent,
    pub agent_wait: Duration,
    /// What the operators signed for the deploy, sent with its check job.
    pub approvals: pgrollout_shared::job::SignedApprovals,
}

/// The gates' answer to a request.
pub enum Verdict {
    /// Every gate passed: dispatch, showing these.
    Passed(Vec<GateOutcome>),
    /// Nothing failed, but approvals or a sign-off are still to come.
    AwaitingApproval(String),
    /// Nothing failed and nobody is waited for, but a window is closed.
    Scheduled(ScheduledFor),
}

/// When a request that waits only for its windows may run.
pub struct ScheduledFor {
    pub run_at: SystemTime,
    /// The window gates, as shown: `maintenance_window 02:00-04:00 UTC`.
    pub window: String,
}

/// What a closed window means for this request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OutsideWindow {
    /// Schedule the rollout for the window's next opening.
    Schedule,
    /// `--no-wait`: refuse, naming the window gate.
    Refuse,
}

/// Passes, waits for people, schedules for the window, or refuses with
/// every failed gate named.
pub async fn check(
    controller: &Arc<Controller>,
    request: GateCheck<'_>,
) -> Result<Verdict, EngineError> {
    check_with(controller, request, OutsideWindow::Schedule).await
}

pub async fn check_with(
    controller: &Arc<Controller>,
    request: GateCheck<'_>,
    outside_window: OutsideWindow,
) -> Result<Verdict, EngineError> {
    let span = crate::telemetry::spans::gates_span(request.environment);
    let mut results = evaluate(controller, &request)
        .instrument(span.clone())
        .await?;
    if outside_window == OutsideWindow::Refuse {
        for result in results
            .iter_mut()
            .filter(|r| r.state == GateState::Scheduled)
        {
            result.state = GateState::Failed;
            result
                .reason
                .push_str(" (--no-wait: refused instead of scheduled for then)");
        }
    }
    let mut refusal = gates::refusal(&results);
    let waiting = |state: GateState| -> Vec<String> {
        results
            .iter()
            .filter(|r| r.state == state)
            .map(|r| format!("gate {}: {}", r.gate.as_str(), r.reason))
            .collect()
    };
    let pending = waiting(GateState::Pending);
    let closed_windows = waiting(GateState::Scheduled);
    // The dry run touches a database: only for a request that would run now.
    let syntax = results.iter().position(|r| r.gate == GateName::Syntax);
    if let (Some(index), Some(context), None, true, true) = (
        syntax,
        &request.dry_run,
        &refusal,
        pending.is_empty(),
        closed_windows.is_empty(),
    ) {
        let dry_run = DryRun {
            environment: request.environment,
            plan: request.plan,
            actor: request.actor,
            trace: context.trace,
            agent_wait: context.agent_wait,
            approvals: context.approvals.clone(),
        };
        results[index] = dry_run::run(controller, dry_run).await?;
        refusal = gates::refusal(&results);
    }
    let mut scheduled = None;
    if refusal.is_none() && pending.is_empty() && !closed_windows.is_empty() {
        let environment = controller.config.environments.get(request.environment);
        match environment.map(|e| gates::window_opening(e, controller.clock.now())) {
            Some(Ok(Some((run_at, window)))) => scheduled = Some(ScheduledFor { run_at, window }),
            Some(Err(never)) => refusal = Some(format!("gates {}", never)),
            Some(Ok(None)) | None => refusal = Some(closed_windows.join("; ")),
        }
    }
    let (action, outcome) = match (&refusal, pending.is_empty(), &scheduled) {
        (Some(_), _, _) => ("gates.refused", "refused"),
        (None, false, _) => ("gates.pending", "pending"),
        (None, true, Some(_)) => ("gates.scheduled", "pending"),
        (None, true, None) => ("gates.passed", "ok"),
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
            // Every audited check is a deploy's (or a request's at its
            // time): its trace is the rollout's.
            trace_id: request
                .dry_run
                .as_ref()
                .map(|context| context.trace.trace_id.clone()),
            ..Default::default()
        })
        .await;
    match (refusal, scheduled) {
        (Some(message), _) => Err(EngineError::Refused(message)),
        (None, _) if !pending.is_empty() => {
            // Approvals first, then the window: say both.
            let then = closed_windows
                .iter()
                .map(|w| format!("; then {w} (scheduled for it once approved)"))
                .collect::<String>();
            Ok(Verdict::AwaitingApproval(pending.join("; ") + &then))
        }
        (None, Some(scheduled)) => Ok(Verdict::Scheduled(scheduled)),
        (None, None) => Ok(Verdict::Passed(outcomes(&results))),
    }
}

/// The gates of a parked request as they stand now, without auditing:
/// what `pgrollout status p-…` shows.
pub async fn evaluate_now(
    controller: &Controller,
    request: &GateCheck<'_>,
) -> Result<Vec<GateOutcome>, EngineError> {
    Ok(outcomes(&evaluate(controller, request).await?))
}

/// Every environment's verdict on a plan, for `pgrollout plan`.
pub async fn evaluate_everywhere(
    controller: &Controller,
    plan_id: &str,
    plan: &Plan,
    attachments: &Attachments,
) -> Result<Vec<EnvironmentGates>, EngineError> {
    let mut environments = Vec::new();
    for name in controller.config.environments.keys() {
        let request = GateCheck {
            environment: name,
            plan_id,
            label: "",
            actor: "",
            attachments: attachments.clone(),
            approvals: &[],
            plan,
            dry_run: None,
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
) -> Result<Vec<GateResult>, EngineError> {
    let input = GateInput {
        environments: &controller.config.environments,
        environment: request.environment,
        plan_id: request.plan_id,
        attachments: &request.attachments,
        now: controller.clock.now(),
        approvals: request.approvals,
        requester: requester_name(request.actor),
        ticket_check: controller.ticket_check.as_ref(),
        routines: &request.plan.routines,
    };
    gates::evaluate(&controller.store, &input)
        .await
        .map_err(EngineError::store("evaluate the gates"))
}

fn outcomes(results: &[GateResult]) -> Vec<GateOutcome> {
    results
        .iter()
        .map(|r| GateOutcome {
            gate: r.gate.as_str().to_owned(),
            passed: r.state == GateState::Passed,
            reason: r.reason.clone(),
            state: r.state.as_str().to_owned(),
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
                GateState::Scheduled => "closed now",
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
