//! Environment gates (SEED.md "Deployment Gates by Environment", DESIGN §6):
//! each gate a named check configured per environment as data, evaluated by
//! the controller before a deploy is offered to any agent, with its reason
//! recorded.
//!
//! Gates fail closed: a gate this controller cannot evaluate refuses the
//! rollout and says so, rather than letting it through. Two kinds of gate
//! wait instead of failing: approvals wait for people (`Pending`), time
//! windows wait for the clock (`Scheduled`, with the opening time).
//!
//! The syntax gate has a second half that needs an agent — the dry-run
//! `check` job on the zone's database — which `engine::requests::verdict` runs just before
//! dispatch (`crate::engine::dry_run`); here it reports the parse.

mod monitoring;
mod performance;
mod tests_passed;
pub mod ticket;
mod window;

use std::collections::BTreeMap;
use std::time::SystemTime;

use tracing::Instrument;

pub use window::{common_opening, TimeWindow};

use crate::config::{Environment, GateName};
use crate::store::{Store, StoreError};

/// What the operator attached to the request.
#[derive(Clone, Debug, Default)]
pub struct Attachments {
    pub ticket: Option<String>,
    pub runbook: Option<String>,
    pub rollback_plan: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState {
    Passed,
    /// Waiting for people: approvals or a sign-off still to come.
    Pending,
    /// A time window that is closed now and opens at a known time: the
    /// rollout is scheduled for it rather than refused.
    Scheduled,
    Failed,
}

impl GateState {
    /// As the wire and the audit log name it.
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Passed => "passed",
            GateState::Pending => "pending",
            GateState::Scheduled => "scheduled",
            GateState::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateResult {
    pub gate: GateName,
    pub state: GateState,
    /// Why, and who or what satisfied it.
    pub reason: String,
}

impl GateResult {
    pub(crate) fn passed(gate: GateName, reason: impl Into<String>) -> Self {
        GateResult {
            gate,
            state: GateState::Passed,
            reason: reason.into(),
        }
    }

    fn pending(gate: GateName, reason: impl Into<String>) -> Self {
        GateResult {
            gate,
            state: GateState::Pending,
            reason: reason.into(),
        }
    }

    pub(crate) fn failed(gate: GateName, reason: impl Into<String>) -> Self {
        GateResult {
            gate,
            state: GateState::Failed,
            reason: reason.into(),
        }
    }

    fn scheduled(gate: GateName, reason: impl Into<String>) -> Self {
        GateResult {
            gate,
            state: GateState::Scheduled,
            reason: reason.into(),
        }
    }
}

/// Everything a gate may look at; `now` is injected so time gates can be
/// tested at any hour.
pub struct GateInput<'a> {
    pub environments: &'a BTreeMap<String, Environment>,
    pub environment: &'a str,
    pub plan_id: &'a str,
    pub attachments: &'a Attachments,
    pub now: SystemTime,
    /// Decisions recorded on this request so far (none for a new one).
    pub approvals: &'a [crate::store::Approval],
    /// Who asked: nobody approves their own rollout.
    pub requester: &'a str,
    /// The change-control system to ask about tickets, when configured.
    pub ticket_check: Option<&'a ticket::TicketCheck>,
    /// The plan's routines: their watches (monitoring), `[perf]` probes and
    /// pgTAP tests.
    pub routines: &'a [pgrollout_shared::routine::Routine],
}

/// Evaluates every gate of the environment, in a stable order.
pub async fn evaluate(store: &Store, input: &GateInput<'_>) -> Result<Vec<GateResult>, StoreError> {
    let Some(environment) = input.environments.get(input.environment) else {
        return Ok(Vec::new());
    };
    let mut results = Vec::new();
    for gate in environment.effective_gates() {
        let span = crate::telemetry::spans::gate_span(gate.as_str());
        let result = evaluate_one(store, environment, gate, input)
            .instrument(span.clone())
            .await?;
        span.record("pgrollout.gate.state", result.state.as_str());
        results.push(result);
    }
    Ok(results)
}

async fn evaluate_one(
    store: &Store,
    environment: &Environment,
    gate: GateName,
    input: &GateInput<'_>,
) -> Result<GateResult, StoreError> {
    let short = &input.plan_id[..input.plan_id.len().min(12)];
    Ok(match gate {
        GateName::Syntax => {
            let definers = crate::project::definer::unsafe_definers(input.routines.iter().map(|r| {
                (
                    r.identity.to_string(),
                    r.source_path.as_str(),
                    r.source_line,
                    r.create_sql.as_str(),
                )
            }));
            match (definers.is_empty(), environment.require_search_path) {
                (false, true) => GateResult::failed(
                    gate,
                    format!(
                        "require_search_path is set for this environment: {}",
                        definers.join("; ")
                    ),
                ),
                (empty, _) => GateResult::passed(
                    gate,
                    format!(
                        "every statement was parsed by PostgreSQL's parser (PL/pgSQL bodies by its PL/pgSQL parser) before the plan was built; \
                         the dry-run apply on this environment's database runs just before the deploy{}",
                        if empty {
                            String::new()
                        } else {
                            format!("; warning: {}", definers.join("; "))
                        }
                    ),
                ),
            }
        }
        GateName::TestsPassed => tests_passed::evaluate(store, environment, input).await?,
        GateName::PromotedFrom => {
            let from = environment.promote_from.as_deref().unwrap_or_default();
            match store.plan_succeeded_in(input.plan_id, from).await? {
                None => GateResult::failed(
                    gate,
                    format!("plan {short} never succeeded in {from}; deploy exactly this plan there first"),
                ),
                Some(success) => GateResult::passed(
                    gate,
                    format!("plan {short} succeeded in {from}: rollout {} by {}", success.rollout_id, success.actor),
                ),
            }
        }
        GateName::BackupCreated | GateName::BackupVerified => GateResult::passed(
            gate,
            "enforced by the agent: it writes, fsyncs and reads back a verified backup before any change, and stops if it cannot",
        ),
        GateName::NoDrift => GateResult::passed(
            gate,
            "enforced by the agent: before BEGIN, under the deploy lock, it refuses to replace a routine whose live state is not what the ledger last recorded",
        ),
        GateName::BusinessHours | GateName::MaintenanceWindow => {
            match window_of(environment, gate).map(TimeWindow::parse) {
                Some(Ok(window)) if window.contains(input.now) => GateResult::passed(gate, format!("inside {window}")),
                Some(Ok(window)) => GateResult::scheduled(
                    gate,
                    format!(
                        "outside {window}; it next opens at {}",
                        pgrollout_shared::tls::format_utc(window.next_opening(input.now))
                    ),
                ),
                Some(Err(error)) => GateResult::failed(gate, error),
                None => GateResult::failed(gate, "no window is configured for this gate"),
            }
        }
        GateName::ChangeTicket => ticket::gate(input.attachments.ticket.as_deref(), input.ticket_check).await,
        GateName::Runbook => attached(gate, &input.attachments.runbook, "runbook", "--runbook"),
        GateName::RollbackPlan => attached(gate, &input.attachments.rollback_plan, "rollback plan", "--rollback-plan"),
        GateName::Approval => approval_gate(environment, input),
        GateName::StakeholderSignoff => signoff_gate(input),
        GateName::Performance => performance::evaluate(store, environment, input).await?,
        GateName::Monitoring => {
            monitoring::gate(store, environment.monitoring_without_baseline, input).await?
        }
    })
}

/// The configured text of a window gate's window.
fn window_of(environment: &Environment, gate: GateName) -> Option<&str> {
    match gate {
        GateName::BusinessHours => environment.business_hours.as_deref(),
        GateName::MaintenanceWindow => environment.maintenance_window.as_deref(),
        _ => None,
    }
}

/// When a rollout that waits only for its environment's windows may run:
/// the first moment every window gate is open at once, with the windows
/// named (`maintenance_window 02:00-04:00 UTC`). `Ok(None)` when the
/// environment has no window gate; an error when its windows never overlap.
pub fn window_opening(
    environment: &Environment,
    now: SystemTime,
) -> Result<Option<(SystemTime, String)>, String> {
    let mut windows = Vec::new();
    let mut names = Vec::new();
    for gate in environment.effective_gates() {
        let Some(text) = window_of(environment, gate) else {
            continue;
        };
        windows.push(TimeWindow::parse(text)?);
        names.push(format!("{} {text}", gate.as_str()));
    }
    if windows.is_empty() {
        return Ok(None);
    }
    match common_opening(&windows, now) {
        Some(opening) => Ok(Some((opening, names.join(", ")))),
        None => Err(format!(
            "{} are never open at the same time; no rollout can run here until the windows are changed",
            names.join(" and ")
        )),
    }
}

/// N distinct approvers with the approver role (admins count), never the
/// requester; one rejection fails it.
fn approval_gate(environment: &Environment, input: &GateInput<'_>) -> GateResult {
    let gate = GateName::Approval;
    if let Some(rejection) = input.approvals.iter().find(|a| a.decision == "reject") {
        return GateResult::failed(gate, format!("rejected by {}", rejection.approver));
    }
    let mut approvers: Vec<&str> = input
        .approvals
        .iter()
        .filter(|a| {
            a.decision == "approve" && a.role == "approver" && a.approver != input.requester
        })
        .map(|a| a.approver.as_str())
        .collect();
    approvers.sort_unstable();
    approvers.dedup();
    let needed = environment.approvals as usize;
    if approvers.len() >= needed {
        GateResult::passed(gate, format!("approved by {}", approvers.join(", ")))
    } else {
        GateResult::pending(
            gate,
            format!(
                "needs {needed} approval(s) by the approver role, has {}{}",
                approvers.len(),
                if approvers.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", approvers.join(", "))
                }
            ),
        )
    }
}

/// One sign-off by the stakeholder role, never the requester's own.
fn signoff_gate(input: &GateInput<'_>) -> GateResult {
    let gate = GateName::StakeholderSignoff;
    match input
        .approvals
        .iter()
        .find(|a| a.decision == "approve" && a.role == "stakeholder" && a.approver != input.requester)
    {
        Some(signoff) => GateResult::passed(gate, format!("signed off by {}", signoff.approver)),
        None => GateResult::pending(gate, "needs a sign-off by the stakeholder role (`pgrollout approve <request> --as stakeholder`)"),
    }
}

fn attached(gate: GateName, value: &Option<String>, what: &str, flag: &str) -> GateResult {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => GateResult::passed(gate, format!("{what} attached: {value}")),
        None => GateResult::failed(gate, format!("no {what} attached; pass {flag}")),
    }
}

/// The failed gates as one message: `gate promoted_from: …; gate runbook: …`.
pub fn refusal(results: &[GateResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.state == GateState::Failed)
        .map(|r| format!("gate {} refused: {}", r.gate.as_str(), r.reason))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}
