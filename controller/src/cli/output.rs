//! `--output json` (issue 16): one JSON document per command, the same
//! shapes wherever the same thing is printed (a rollout's start, a job's
//! result, a gate, a rollout as recorded), and enum values as lowercase
//! words (`succeeded`, never `STEP_STATUS_SUCCEEDED`). README documents the
//! schema of each command.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    GateOutcome, JobResult, Outcome, RequestParked, RolloutStarted, RolloutStatus, StepStatus,
};
use serde_json::{json, Value};

/// `--output text|json`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// For people (the default).
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// The `--output` flag, for commands that had none.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct OutputFlag {
    /// text (default) or json (one document; schema in README).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

impl OutputFlag {
    pub fn json(self) -> bool {
        self.output == Output::Json
    }
}

/// A step's status as a word: started, succeeded, failed, skipped.
pub fn step_status(status: i32) -> &'static str {
    match StepStatus::try_from(status).unwrap_or(StepStatus::Unspecified) {
        StepStatus::Started => "started",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Unspecified => "unspecified",
    }
}

/// A job's outcome as a word.
pub fn outcome(outcome: i32) -> &'static str {
    match Outcome::try_from(outcome).unwrap_or(Outcome::Unspecified) {
        Outcome::Succeeded => "succeeded",
        Outcome::ValidationFailed => "validation_failed",
        Outcome::DeployFailed => "deploy_failed",
        Outcome::SmokeFailed => "smoke_failed",
        Outcome::Unspecified => "unspecified",
    }
}

pub fn gate(gate: &GateOutcome) -> Value {
    json!({"gate": gate.gate, "passed": gate.passed, "state": gate.state, "reason": gate.reason})
}

pub fn started(started: &RolloutStarted) -> Value {
    json!({
        "rollout": started.rollout_id,
        "job": started.job_id,
        "environment": started.environment,
        "zone": started.zone,
        "agent": started.agent_name,
        "actor": started.actor,
        "trace_id": started.trace_id,
        "started_at_unix_ms": started.started_at_unix_ms,
        "gates": started.gates.iter().map(gate).collect::<Vec<_>>(),
    })
}

pub fn parked(parked: &RequestParked) -> Value {
    json!({
        "request": parked.request_id,
        "state": parked.state,
        "run_at_unix_ms": parked.run_at_unix_ms,
        "window": parked.window,
        "message": parked.message,
    })
}

/// A job's result: the same object in `deploy`, `rollback` and `status`.
pub fn result(result: &JobResult) -> Value {
    json!({
        "outcome": outcome(result.outcome),
        "message": result.message,
        "duration_ms": result.duration_ms,
        "replayed_from_ledger": result.replayed_from_ledger,
        "backup": result.backup_path,
        "backup_sha256": result.backup_sha256,
        "ledger_ids": result.ledger_ids,
        "applied": result.applied.iter().map(|a| json!({
            "identity": a.identity, "change": a.change,
            "new_sha256": a.new_sha256, "previous_sha256": a.previous_sha256,
        })).collect::<Vec<_>>(),
        "routines": result.routines.iter().map(|o| json!({
            "identity": o.identity, "status": o.status, "duration_ms": o.duration_ms,
            "duration_us": o.duration_us, "error": o.error,
        })).collect::<Vec<_>>(),
        "restored": result.restored.iter().map(|r| json!({
            "identity": r.identity, "change": r.change, "source": r.source, "sha256": r.sha256,
        })).collect::<Vec<_>>(),
        "smoke": result.smoke.iter().map(|s| json!({
            "routine": s.routine, "test": s.test, "phase": s.phase, "passed": s.passed,
            "duration_ms": s.duration_ms,
            "checks": s.checks.iter().map(|c| json!({
                "check": c.check, "passed": c.passed, "detail": c.detail,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "warnings": result.warnings,
    })
}

/// A rollout (or a request) as the controller recorded it: `status` prints
/// one, `rollouts` a list of them (without `result`).
pub fn rollout_status(status: &RolloutStatus, with_result: bool) -> Value {
    let mut value = json!({
        "rollout": status.rollout_id,
        "is_request": status.is_request,
        "kind": status.kind,
        "environment": status.environment,
        "zone": status.zone,
        "target": status.target,
        "agent": status.agent_name,
        "actor": status.actor,
        "state": status.state,
        "finished": status.finished,
        "exit_code": status.exit_code,
        "message": status.message,
        "procedure": status.label,
        "plan_id": status.plan_id,
        "commit_sha": status.commit_sha,
        "routine_count": status.routine_count,
        "routines": status.routine_identities,
        "trace_id": status.trace_id,
        "created_at_unix_ms": status.created_at_unix_ms,
        "finished_at_unix_ms": status.finished_at_unix_ms,
        "run_at_unix_ms": status.run_at_unix_ms,
        "window": status.window,
        "request_rollout": status.request_rollout_id,
        "gates": status.gates.iter().map(gate).collect::<Vec<_>>(),
    });
    if with_result {
        value["result"] = status.result.as_ref().map(result).unwrap_or(Value::Null);
    }
    value
}

/// The document `deploy`, `smoke` and `rollback` print at the end.
pub fn run_document(
    rollout: Option<&RolloutStarted>,
    request: Option<&RequestParked>,
    job: Option<&JobResult>,
    code: ExitCode,
) -> Value {
    json!({
        "exit_code": code.code(),
        "rollout": rollout.map(started),
        "request": request.map(parked),
        "result": job.map(result),
    })
}

/// Prints a document as one line.
pub fn print(value: &Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_are_lowercase_words() {
        assert_eq!(step_status(StepStatus::Succeeded as i32), "succeeded");
        assert_eq!(outcome(Outcome::SmokeFailed as i32), "smoke_failed");
        let value = result(&JobResult {
            outcome: Outcome::Succeeded as i32,
            ..JobResult::default()
        });
        assert_eq!(value["outcome"], "succeeded");
    }
}
