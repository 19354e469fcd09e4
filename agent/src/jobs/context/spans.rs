//! The agent's spans of one job: a job span whose parent is the JobOffer's
//! `traceparent` (the controller's dispatch span), and a child span per step
//! (connect, lock, backup, apply, grants, ledger, smoke, commit,
//! post-commit-smoke, …) made from the step events the job already emits, so
//! the job kinds need no tracing code of their own.
//!
//! What a span may carry: OpenTelemetry's stable database conventions
//! (`db.system.name`, `db.namespace`, `server.address`, `server.port`, and on
//! failure `db.response.status_code` = the SQLSTATE and `error.type`), the
//! target, the routines' identities, the smoke tests' names, outcomes and
//! durations (numbers as OTLP integers: `tracing` hands unsigned values to
//! the exporter as strings, so they are recorded as `i64`). Never a step's
//! message (it can quote a server error that quotes data): a failed span's
//! status message names the step and the SQLSTATE only. Never a smoke
//! test's call (its arguments are parameter values), never a credential.

use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry::KeyValue;
use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{Outcome, SmokeReport, StepStatus};
use pgrollout_shared::smoke_compact::existence_only_schema;
use pgrollout_shared::telemetry::set_remote_parent;
use tokio_postgres::error::SqlState;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TargetConfig;

/// How many routine identities the job span lists; the count is always there.
const LISTED_ROUTINES: usize = 20;

pub struct JobSpans {
    job: Span,
    database: String,
    host: String,
    port: i64,
    /// Steps started and not yet finished, by step name.
    open: Mutex<HashMap<String, Span>>,
}

impl JobSpans {
    pub fn start(job: &Job, target: &TargetConfig) -> Self {
        let identities = routine_identities(&job.kind);
        let listed = identities
            .iter()
            .take(LISTED_ROUTINES)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let span = tracing::info_span!(
            target: "pgrollout_agent::job",
            "job",
            otel.name = %format!("job {}", job.kind.name()),
            otel.kind = "consumer",
            pgrollout.job_id = %job.id,
            pgrollout.attempt = i64::from(job.attempt),
            pgrollout.rollout_id = %job.rollout_id,
            pgrollout.kind = job.kind.name(),
            pgrollout.procedure = %job.label,
            pgrollout.routine_count = as_i64(identities.len() as u64),
            pgrollout.target = %target.name,
            db.system.name = "postgresql",
            db.namespace = %target.dbname,
            server.address = %target.host,
            server.port = i64::from(target.port),
            pgrollout.outcome = Empty,
            db.response.status_code = Empty,
            error.type = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        set_remote_parent(&span, &job.trace);
        // On the exported span only: the log's lines inside the job would
        // repeat the list on every line.
        span.set_attribute("pgrollout.routines", listed);
        JobSpans {
            job: span,
            database: target.dbname.clone(),
            host: target.host.clone(),
            port: i64::from(target.port),
            open: Mutex::default(),
        }
    }

    /// The job's span: the job's work runs inside it.
    pub fn job(&self) -> &Span {
        &self.job
    }

    /// Follows one step event: a started step opens its span, a finished
    /// (or skipped) one closes it with its outcome and duration. A step that
    /// only reports its end gets a span of its own, closed at once.
    pub fn step_event(
        &self,
        step: &str,
        status: StepStatus,
        duration_ms: u64,
        sqlstate: Option<&SqlState>,
        smoke: &[SmokeReport],
    ) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if status == StepStatus::Started {
            open.insert(step.to_owned(), self.step_span(step));
            return;
        }
        let span = open.remove(step).unwrap_or_else(|| self.step_span(step));
        drop(open);
        let (outcome, failed) = match status {
            StepStatus::Succeeded => ("succeeded", false),
            StepStatus::Failed => ("failed", true),
            StepStatus::Skipped => ("skipped", false),
            StepStatus::Started | StepStatus::Unspecified => ("unspecified", false),
        };
        crate::telemetry::observe_step(step, outcome, duration_ms);
        span.record("pgrollout.outcome", outcome);
        span.record("pgrollout.duration_ms", as_i64(duration_ms));
        if failed {
            record_failure(&span, &format!("step {step} failed"), sqlstate);
        } else {
            span.record("otel.status_code", "ok");
        }
        if !smoke.is_empty() {
            span.record("pgrollout.smoke.count", as_i64(smoke.len() as u64));
        }
        // An event per test that ran or failed; a routine that only had to
        // exist and did is counted, not listed (a thousand identical events
        // would be most of a batch's trace).
        let mut existence_only = 0u64;
        for report in smoke {
            if existence_only_schema(report).is_some() {
                existence_only += 1;
            } else {
                span.add_event("smoke test", smoke_attributes(report));
            }
        }
        if existence_only > 0 {
            span.record("pgrollout.smoke.existence_only", as_i64(existence_only));
        }
    }

    /// Records the job's outcome on its span, and the SQLSTATE of the
    /// database error the job stopped at, if any.
    pub fn finish(&self, outcome: Outcome, sqlstate: Option<&SqlState>) {
        let name = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::ValidationFailed => "validation-failed",
            Outcome::DeployFailed => "deploy-failed",
            Outcome::SmokeFailed => "smoke-failed",
            Outcome::Unspecified => "unspecified",
        };
        self.job.record("pgrollout.outcome", name);
        if outcome == Outcome::Succeeded {
            self.job.record("otel.status_code", "ok");
        } else {
            record_failure(&self.job, name, sqlstate);
        }
    }

    fn step_span(&self, step: &str) -> Span {
        tracing::info_span!(
            target: "pgrollout_agent::step",
            parent: &self.job,
            "step",
            otel.name = %step,
            pgrollout.step = %step,
            db.system.name = "postgresql",
            db.namespace = %self.database,
            server.address = %self.host,
            server.port = self.port,
            pgrollout.outcome = Empty,
            pgrollout.duration_ms = Empty,
            pgrollout.smoke.count = Empty,
            pgrollout.smoke.existence_only = Empty,
            db.response.status_code = Empty,
            error.type = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        )
    }
}

/// A failed span: status ERROR with a message that names what failed and
/// its SQLSTATE (never the server's text, which can quote data), and the
/// conventions' `db.response.status_code` and `error.type`: the SQLSTATE
/// when the database refused, else what pgrollout calls the failure. The
/// code comes typed from the driver's error where the failure began.
fn record_failure(span: &Span, what: &str, sqlstate: Option<&SqlState>) {
    let code = sqlstate.map(SqlState::code);
    if let Some(code) = code {
        span.record("db.response.status_code", code);
    }
    span.record("error.type", code.unwrap_or(what));
    span.record("otel.status_code", "error");
    let description = match code {
        Some(code) => format!("{what}: SQLSTATE {code}"),
        None => what.to_owned(),
    };
    span.record("otel.status_description", description.as_str());
}

/// A count or duration as the OTLP integer it is (saturating).
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One smoke test's result, without its call or its checks' details.
fn smoke_attributes(report: &SmokeReport) -> Vec<KeyValue> {
    let failed_checks: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.as_str())
        .collect();
    vec![
        KeyValue::new("pgrollout.routine", report.routine.clone()),
        KeyValue::new("pgrollout.smoke.test", report.test.clone()),
        KeyValue::new("pgrollout.smoke.phase", report.phase.clone()),
        KeyValue::new("pgrollout.smoke.passed", report.passed),
        KeyValue::new("pgrollout.smoke.duration_ms", as_i64(report.duration_ms)),
        KeyValue::new("pgrollout.smoke.failed_checks", failed_checks.join(", ")),
    ]
}

/// The identities of the routines a job names (its plan's, or what a
/// plan-less job selects by name).
fn routine_identities(kind: &JobKind) -> Vec<String> {
    match kind {
        JobKind::Deploy { routines, .. }
        | JobKind::Smoke { routines, .. }
        | JobKind::Check { routines }
        | JobKind::PerfProbe { routines, .. } => {
            routines.iter().map(|r| r.identity.to_string()).collect()
        }
        JobKind::WatchSample(spec) => spec.probes.iter().map(|r| r.identity.to_string()).collect(),
        JobKind::Rollback(_)
        | JobKind::Disable(_)
        | JobKind::Enable(_)
        | JobKind::History(_)
        | JobKind::AuditAnchors
        | JobKind::Drift { .. }
        | JobKind::Adopt(_) => Vec::new(),
    }
}
