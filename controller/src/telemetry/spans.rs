//! The spans of one rollout on the CLI's and the controller's side:
//!
//! ```text
//! pgrollout deploy (CLI)
//! └─ rollout deploy (controller: from the request until the job's result)
//!    ├─ gates ─ gate <name> …
//!    └─ dispatch (pick an agent, record, offer) ─ job deploy (agent) ─ steps …
//! ```
//!
//! The trace id the controller stores on the rollout and its audit entries
//! is the request's `traceparent`, which the rollout span continues, so the
//! stored id and the spans' id are one. Attributes name what ran where and
//! how it ended — never a secret, never a parameter value.

use std::future::Future;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{DeployRequest, Outcome, RollbackRequest, RoutineRequest};
use pgrollout_shared::telemetry::{set_remote_parent, traceparent_of};
use pgrollout_shared::traceparent::TraceParent;
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// The root span of a CLI command.
pub fn command_span(command: &str) -> Span {
    tracing::info_span!(
        target: "pgrollout::cli",
        "command",
        otel.name = %format!("pgrollout {command}"),
        otel.kind = "client",
        pgrollout.command = %command,
        pgrollout.exit_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

pub fn record_exit_code(span: &Span, code: ExitCode) {
    span.record("pgrollout.exit_code", i64::from(code.code()));
    if code != ExitCode::Success {
        let description = format!("exit code {}", code.code());
        span.record("error.type", description.as_str());
        span.record("otel.status_code", "error");
        span.record("otel.status_description", description.as_str());
    }
}

/// The trace context to send with a request: the current span's (the CLI
/// command's) when the CLI exports its spans, otherwise none ("") — a parent
/// id that is never exported would leave every such trace without a root in
/// the tracing backend, so the controller starts the trace instead. The
/// controller stores and prints the trace id either way.
pub fn current_traceparent() -> String {
    if !super::cli_exports_spans() {
        return String::new();
    }
    traceparent_of(&Span::current())
        .map(|parent| parent.to_string())
        .unwrap_or_default()
}

/// The controller's span of one rollout, continuing the request's trace.
/// Created before the request is validated, so a refusal is traced too.
pub fn rollout_span(kind: &str, environment: &str, procedure: &str, traceparent: &str) -> Span {
    let span = tracing::info_span!(
        target: "pgrollout::rollout",
        "rollout",
        otel.name = %format!("rollout {kind}"),
        otel.kind = "server",
        pgrollout.kind = %kind,
        pgrollout.environment = %environment,
        pgrollout.procedure = %procedure,
        pgrollout.rollout_id = Empty,
        pgrollout.job_id = Empty,
        pgrollout.plan_id = Empty,
        pgrollout.actor = Empty,
        pgrollout.outcome = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if let Some(parent) = TraceParent::parse(traceparent) {
        set_remote_parent(&span, &parent);
    }
    span
}

/// The trace a request belongs to: its `traceparent`, or, when it carries
/// none, the current (rollout) span's own new trace, or a fresh one.
pub fn request_trace(traceparent: &str) -> TraceParent {
    TraceParent::parse(traceparent)
        .or_else(|| traceparent_of(&Span::current()))
        .unwrap_or_else(TraceParent::new_root)
}

/// Marks the rollout span refused: the request never reached an agent.
pub fn record_refusal(span: &Span, status: &tonic::Status) {
    let outcome = refusal_outcome(status.code());
    span.record("pgrollout.outcome", outcome);
    record_error(span, outcome);
}

/// Status ERROR with a message (the outcome's name: a refusal's or a
/// failure's own text can quote an operator's input or a server error), and
/// the conventions' `error.type`.
fn record_error(span: &Span, outcome: &str) {
    span.record("error.type", outcome);
    span.record("otel.status_code", "error");
    span.record("otel.status_description", outcome);
}

fn refusal_outcome(code: tonic::Code) -> &'static str {
    match code {
        // Gates refused, or parked for approval: the message says which.
        tonic::Code::FailedPrecondition => "not-started",
        tonic::Code::Unavailable => "no-agent",
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "denied",
        _ => "refused",
    }
}

/// Records what the rollout came to: the job's outcome, or the state of a
/// rollout settled without a result (`unknown`, `failed`).
pub fn record_outcome(span: &Span, outcome: &str, failed: bool) {
    span.record("pgrollout.outcome", outcome);
    if failed {
        record_error(span, outcome);
    } else {
        span.record("otel.status_code", "ok");
    }
}

/// [`record_outcome`] for a job's result.
pub fn record_result(span: &Span, outcome: Outcome) {
    let name = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::ValidationFailed => "validation-failed",
        Outcome::DeployFailed => "deploy-failed",
        Outcome::SmokeFailed => "smoke-failed",
        Outcome::Unspecified => "unspecified",
    };
    record_outcome(span, name, outcome != Outcome::Succeeded);
}

/// Records the rollout's identifiers on the current (rollout) span.
pub fn record_rollout(rollout_id: &str, job_id: &str, plan_id: &str, actor: &str) {
    let span = Span::current();
    span.record("pgrollout.rollout_id", rollout_id);
    span.record("pgrollout.job_id", job_id);
    span.record("pgrollout.plan_id", plan_id);
    span.record("pgrollout.actor", actor);
}

/// All gates of one request, a child of the current (rollout) span.
pub fn gates_span(environment: &str) -> Span {
    tracing::info_span!(
        target: "pgrollout::gates",
        "gates",
        pgrollout.environment = %environment,
        pgrollout.verdict = Empty,
    )
}

/// One gate's evaluation.
pub fn gate_span(gate: &str) -> Span {
    tracing::info_span!(
        target: "pgrollout::gates",
        "gate",
        otel.name = %format!("gate {gate}"),
        pgrollout.gate = %gate,
        pgrollout.gate.state = Empty,
    )
}

/// From picking an agent to the offer on its stream. Its context is the
/// job's `traceparent`, so the agent's job span is its child. When the
/// current span is not of the rollout's trace (spans not exported, or a
/// caller without a rollout span), it continues `trace` directly.
pub fn dispatch_span(trace: &TraceParent, zone: &str, target: &str) -> Span {
    let span = tracing::info_span!(
        target: "pgrollout::rollout",
        "dispatch",
        pgrollout.zone = %zone,
        pgrollout.target = %target,
        pgrollout.agent = Empty,
    );
    let current = traceparent_of(&Span::current());
    if current.map(|c| c.trace_id) != Some(trace.trace_id.clone()) {
        set_remote_parent(&span, trace);
    }
    span
}

/// The `traceparent` of the JobOffer: the dispatch span's context when spans
/// are exported, else a child of the rollout's trace. Always `trace`'s id.
pub fn job_traceparent(dispatch: &Span, trace: &TraceParent) -> TraceParent {
    traceparent_of(dispatch)
        .filter(|context| context.trace_id == trace.trace_id)
        .unwrap_or_else(|| trace.child())
}

/// A request that starts a rollout, and the span it is traced under.
pub trait RolloutRequestSpan {
    /// The rollout span for this request; `kind` is the job kind.
    fn rollout_span(&self, kind: &str) -> Span;
}

impl RolloutRequestSpan for DeployRequest {
    fn rollout_span(&self, kind: &str) -> Span {
        let label = self.plan.as_ref().map_or("", |plan| plan.label.as_str());
        rollout_span(kind, &self.environment, label, &self.traceparent)
    }
}

impl RolloutRequestSpan for RollbackRequest {
    fn rollout_span(&self, kind: &str) -> Span {
        let what = if self.procedure.is_empty() {
            &self.rollout_id
        } else {
            &self.procedure
        };
        rollout_span(kind, &self.environment, what, &self.traceparent)
    }
}

impl RolloutRequestSpan for RoutineRequest {
    fn rollout_span(&self, kind: &str) -> Span {
        rollout_span(kind, &self.environment, &self.procedure, &self.traceparent)
    }
}

/// Runs a request's handler inside its rollout span; a refusal is recorded
/// on the span. The span lives on in the rollout's relay task until the
/// job's result.
pub async fn in_span<T>(
    span: Span,
    handler: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let result = handler.instrument(span.clone()).await;
    if let Err(status) = &result {
        record_refusal(&span, status);
    }
    result
}
