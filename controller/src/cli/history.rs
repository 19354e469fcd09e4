//! `pgrollout history <procedure> <environment> [--output json]`: every
//! version the environment's ledger knows of a procedure's routines, oldest
//! first — read by the zone's agent, since the controller cannot reach the
//! database. The live version is marked; ledger ids and plan ids are what
//! `pgrollout rollback --to` takes.

use super::output::Output;
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{LedgerEntry, Outcome, RoutineRequest};

use super::connect::OperatorTls;
use super::operation::{call_and_follow, Call};
use super::report::utc_timestamp;
use super::style;

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Routine name (all overloads), e.g. reconcilemupstream.
    procedure: String,
    /// Environment from the controller's config, e.g. prod.
    environment: String,
    /// text (default) or json.
    #[arg(long, default_value = "text")]
    output: Output,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

pub async fn run(address: &str, tls: &OperatorTls, args: HistoryArgs) -> ExitCode {
    let request = RoutineRequest {
        environment: args.environment.clone(),
        procedure: args.procedure.clone(),
        revoke: false,
        traceparent: crate::telemetry::spans::current_traceparent(),
        agent_wait_ms: u64::try_from(args.agent_wait.as_millis()).unwrap_or(u64::MAX),
        ..Default::default()
    };
    let followed = match call_and_follow(address, tls, Call::History(request), true).await {
        Ok(followed) => followed,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let result = followed.result;
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
        return code;
    }
    match args.output {
        Output::Json => {
            let entries: Vec<serde_json::Value> = result.history.iter().map(as_json).collect();
            println!("{}", serde_json::Value::Array(entries));
        }
        Output::Text => {
            print!("{}", table(&result.history));
            for warning in &result.warnings {
                println!("{} {warning}", style::warning_prefix());
            }
        }
    }
    code
}

fn short(text: &str) -> &str {
    &text[..text.len().min(12)]
}

/// One line per ledger row, oldest first; `*` marks the live version.
pub fn table(entries: &[LedgerEntry]) -> String {
    let mut text = format!(
        "  {:>6}  {:<23}  {:<28}  {:<13}  {:<12}  {:<6}  {:<16}  {:<12}  {:<12}  {:<12}  TRACE ID\n",
        "LEDGER", "TIME", "ROUTINE", "ACTION", "CHANGE", "UNDOES", "ACTOR", "PLAN", "COMMIT", "SHA256"
    );
    for entry in entries {
        let undoes = if entry.undoes_ledger_id == 0 {
            String::new()
        } else {
            format!("#{}", entry.undoes_ledger_id)
        };
        text.push_str(&format!(
            "{} {:>6}  {:<23}  {:<28}  {:<13}  {:<12}  {:<6}  {:<16}  {:<12}  {:<12}  {:<12}  {}\n",
            if entry.live { "*" } else { " " },
            entry.id,
            utc_timestamp(entry.applied_at_unix_ms),
            entry.identity,
            entry.action,
            entry.change,
            undoes,
            entry.actor,
            if entry.plan_id.is_empty() {
                "-"
            } else {
                short(&entry.plan_id)
            },
            if entry.commit_sha.is_empty() {
                "-"
            } else {
                short(&entry.commit_sha)
            },
            if entry.new_sha256.is_empty() {
                "(absent)"
            } else {
                short(&entry.new_sha256)
            },
            if entry.trace_id.is_empty() {
                "-"
            } else {
                &entry.trace_id
            },
        ));
    }
    text
}

fn as_json(entry: &LedgerEntry) -> serde_json::Value {
    serde_json::json!({
        "ledger_id": entry.id,
        "applied_at": utc_timestamp(entry.applied_at_unix_ms),
        "identity": entry.identity,
        "action": entry.action,
        "change": entry.change,
        "actor": entry.actor,
        "plan_id": entry.plan_id,
        "commit_sha": entry.commit_sha,
        "trace_id": entry.trace_id,
        "rollout_id": entry.rollout_id,
        "job_id": entry.job_id,
        "previous_sha256": entry.previous_sha256,
        "new_sha256": entry.new_sha256,
        "undoes_ledger_id": (entry.undoes_ledger_id != 0).then_some(entry.undoes_ledger_id),
        "note": entry.note,
        "live": entry.live,
    })
}
