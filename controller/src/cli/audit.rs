//! `pgrollout audit`: read the controller's audit log, and `audit verify`:
//! prove its hash chain intact or name the first broken entry.

use super::output::Output;
use pgrollout_shared::text::escaped;
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{AuditRecord, AuditRequest, AuditResponse};

use super::connect::{self, OperatorTls};
use super::report::utc_timestamp;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    verify: Option<AuditAction>,
    /// Only entries of this rollout.
    #[arg(long)]
    rollout: Option<String>,
    /// Only entries about this procedure.
    #[arg(long)]
    procedure: Option<String>,
    /// Only entries newer than this, e.g. 1h, 7d.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// text (default) or json.
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Subcommand)]
enum AuditAction {
    /// Check every entry's hash and its link to the one before.
    Verify,
}

pub async fn run(address: &str, tls: &OperatorTls, args: AuditArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let verify = args.verify.is_some();
    let request = AuditRequest {
        rollout_id: args.rollout.unwrap_or_default(),
        procedure: args.procedure.unwrap_or_default(),
        since_unix_ms: args
            .since
            .map(|d| now_unix_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
        verify,
    };
    let response = match client.audit(request).await {
        Ok(response) => escaped(response.into_inner(), "pgrollout.v1.AuditResponse"),
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    if verify {
        return print_verdict(&response);
    }
    match args.output {
        Output::Json => {
            let entries: Vec<serde_json::Value> = response.entries.iter().map(as_json).collect();
            println!("{}", serde_json::Value::Array(entries));
        }
        Output::Text => {
            for entry in &response.entries {
                println!("{}", as_line(entry));
            }
        }
    }
    ExitCode::Success
}

/// `audit verify`'s report: the verdict, each zone whose anchors were (or
/// could not be) checked, and what nothing outside the store vouches for.
fn print_verdict(response: &AuditResponse) -> ExitCode {
    let code = if response.chain_intact {
        println!(
            "audit log intact: {} entries verified (hash chain, authentication codes, anchors)",
            response.entries_checked
        );
        ExitCode::Success
    } else {
        println!(
            "audit log BROKEN at entry {}: {} ({} entries checked)",
            response.first_broken_seq,
            escape_controls(&response.problem),
            response.entries_checked
        );
        ExitCode::ValidationFailed
    };
    for zone in &response.anchor_zones {
        let place = format!(
            "zone {} (environment {}, target {})",
            zone.zone, zone.environment, zone.target
        );
        if zone.reachable {
            println!(
                "anchors: {place}: checked, {} anchor(s), newest entry {}",
                zone.anchors_checked, zone.newest_anchor_seq
            );
        } else {
            println!(
                "anchors: {place}: NOT CHECKED: {}",
                escape_controls(&zone.detail)
            );
        }
    }
    if response.newest_anchor_seq == 0 {
        println!(
            "not covered: no zone holds an anchor yet, so a truncated or wiped log cannot be told from a short one"
        );
    } else if response.newest_anchor_seq < response.entries_checked {
        println!(
            "not covered: entries after {} (the newest anchor) are vouched for by their authentication codes only; \
             a deleted tail after it cannot be detected until the next change anchors a newer entry",
            response.newest_anchor_seq
        );
    }
    code
}

/// Control characters from the controller's text are shown escaped, never
/// sent to the operator's terminal.
fn escape_controls(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn as_line(entry: &AuditRecord) -> String {
    let mut line = format!(
        "{:>5}  {}  {:<24} {:<18} {:<10}",
        entry.seq,
        utc_timestamp(entry.at_unix_ms),
        entry.actor,
        entry.action,
        entry.outcome
    );
    for (label, value) in [
        ("rollout", &entry.rollout_id),
        ("env", &entry.environment),
        ("procedure", &entry.procedure),
        ("trace", &entry.trace_id),
    ] {
        if !value.is_empty() {
            line.push_str(&format!(" {label}={value}"));
        }
    }
    line.push_str(&format!("  {}", entry.details));
    line
}

fn as_json(entry: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": entry.seq,
        "at": utc_timestamp(entry.at_unix_ms),
        "actor": entry.actor,
        "action": entry.action,
        "outcome": entry.outcome,
        "rollout_id": entry.rollout_id,
        "environment": entry.environment,
        "procedure": entry.procedure,
        "trace_id": entry.trace_id,
        "details": entry.details,
        "hash": entry.hash,
    })
}
