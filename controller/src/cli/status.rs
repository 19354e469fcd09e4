//! `pgrollout status <rollout>` and `pgrollout rollouts`: what the
//! controller recorded — state, who, what, where, and the per-routine report.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{GetRolloutRequest, ListRolloutsRequest, RolloutStatus};
use pgrollout_shared::text::escaped;

use super::connect::{self, OperatorTls};
use super::output::{self, OutputFlag};
use super::report::{self, utc_timestamp};
use super::style::{mark, Mark};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The rollout id (`r-…`), fleet rollout id (`f-…`) or request id
    /// (`p-…`), as `deploy`, `batch` and `rollouts` print it.
    rollout: String,
    /// Follow a request (`p-…`) until the rollout it becomes has a result
    /// (through its approvals and window), or a rollout (`r-…`) until its
    /// result is recorded, and exit with its code.
    #[arg(long, conflicts_with = "output")]
    follow: bool,
    #[command(flatten)]
    output: OutputFlag,
}

#[derive(clap::Args)]
pub struct RolloutsArgs {
    /// Only this environment.
    #[arg(long = "env")]
    environment: Option<String>,
    /// Only this state: running, succeeded, failed, unknown, rolled_back, or
    /// for requests not yet rollouts awaiting_approval, scheduled, cancelled…
    #[arg(long)]
    state: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn status(address: &str, tls: &OperatorTls, args: StatusArgs) -> ExitCode {
    if args.follow {
        return super::request::follow_request(address, tls, &args.rollout).await;
    }
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let request = GetRolloutRequest {
        rollout_id: args.rollout,
    };
    let status = match client.get_rollout(request).await {
        Ok(response) => escaped(response.into_inner(), "pgrollout.v1.RolloutStatus"),
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            return fail(code, &message);
        }
    };
    // Issue 24: a fleet rollout (`f-…`) lists every target's state.
    if let Some(fleet) = &status.fleet {
        if args.output.json() {
            let mut document = output::rollout_status(&status, false);
            document["fleet"] = super::fleet_report::json(fleet);
            output::print(&document);
        } else {
            print!("{}", super::fleet_report::text(fleet));
        }
        return ExitCode::Success;
    }
    if args.output.json() {
        output::print(&output::rollout_status(&status, true));
    } else {
        print!("{}", describe(&status));
    }
    ExitCode::Success
}

pub async fn list(address: &str, tls: &OperatorTls, args: RolloutsArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let request = ListRolloutsRequest {
        environment: args.environment.unwrap_or_default(),
        state: args.state.unwrap_or_default(),
        limit: args.limit,
    };
    let rollouts = match client.list_rollouts(request).await {
        Ok(response) => {
            escaped(response.into_inner(), "pgrollout.v1.ListRolloutsResponse").rollouts
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            return fail(code, &message);
        }
    };
    if args.output.json() {
        output::print(&serde_json::Value::Array(
            rollouts
                .iter()
                .map(|r| output::rollout_status(r, false))
                .collect(),
        ));
        return ExitCode::Success;
    }
    if rollouts.is_empty() {
        println!("no rollouts");
        return ExitCode::Success;
    }
    println!(
        "{:<22} {:<23} {:<8} {:<6} {:<12} {:<24} {:>8}  ACTOR",
        "ROLLOUT", "STARTED", "KIND", "ENV", "STATE", "PROCEDURE", "ROUTINES"
    );
    for r in rollouts {
        // Only a request still waiting for its window runs at a time; a
        // cancelled, refused or started one keeps its old time in the store.
        let runs_at = if r.run_at_unix_ms > 0 && r.state == "scheduled" {
            format!("  runs at {}", utc_timestamp(r.run_at_unix_ms))
        } else {
            String::new()
        };
        println!(
            "{:<22} {:<23} {:<8} {:<6} {:<12} {:<24} {:>8}  {}{runs_at}",
            r.rollout_id,
            utc_timestamp(r.created_at_unix_ms),
            r.kind,
            r.environment,
            r.state,
            r.label,
            r.routine_count,
            r.actor
        );
    }
    ExitCode::Success
}

/// The status block, then the per-routine report when there is a result.
fn describe(status: &RolloutStatus) -> String {
    if status.is_request {
        return describe_request(status);
    }
    let mut lines = vec![
        format!("Rollout: {}", status.rollout_id),
        format!("Kind: {}", status.kind),
        format!(
            "Procedure: {} ({} routines)",
            status.label, status.routine_count
        ),
        format!(
            "Environment: {} (zone {}, target {})",
            status.environment.to_uppercase(),
            status.zone,
            status.target
        ),
        format!("State: {}", status.state),
        format!("Requested By: {}", status.actor),
        format!(
            "Agent: {}",
            if status.agent_name.is_empty() {
                "-"
            } else {
                &status.agent_name
            }
        ),
        format!("Plan: {} (commit {})", status.plan_id, status.commit_sha),
        format!("Started: {}", utc_timestamp(status.created_at_unix_ms)),
    ];
    if status.finished {
        lines.push(format!(
            "Finished: {} (exit {})",
            utc_timestamp(status.finished_at_unix_ms),
            status.exit_code
        ));
    }
    if !status.message.is_empty() {
        lines.push(format!("Message: {}", status.message));
    }
    lines.push(format!("Trace ID: {}", status.trace_id));
    for gate in &status.gates {
        lines.push(gate_line(gate));
    }
    if let Some(pruned) = pruned_line(status) {
        lines.push(pruned);
    }
    let mut text = lines.join("\n") + "\n";
    if let Some(result) = &status.result {
        let (shown, hidden) = report::rows_to_show(&result.routines, |o| !report::is_ok(&o.status));
        for outcome in shown {
            let error = if outcome.error.is_empty() {
                String::new()
            } else {
                format!("  {}", outcome.error)
            };
            text.push_str(&format!(
                "  {} {:<12} {}{error}\n",
                report::outcome_mark(&outcome.status),
                outcome.status,
                outcome.identity
            ));
        }
        if hidden > 0 {
            text.push_str(&report::more_line(hidden));
            text.push('\n');
        }
        if !result.backup_path.is_empty() {
            text.push_str(&format!(
                "Backup: {} (sha256 {})\n",
                result.backup_path, result.backup_sha256
            ));
        }
        if !result.smoke_incomplete.is_empty() {
            text.push_str(&format!(
                "Smoke Test: {} INCOMPLETE — {}\n",
                mark(Mark::Incomplete),
                result.smoke_incomplete
            ));
        }
    }
    text
}

/// What retention removed of a rollout, and when (`[store.retention]`);
/// `None` for a rollout kept whole.
pub(super) fn pruned_line(status: &RolloutStatus) -> Option<String> {
    (status.pruned_at_unix_ms > 0).then(|| {
        let what = if status.pruned_result_kept {
            "step events (the result is kept: a promotion gate reads it)"
        } else {
            "step events and job result"
        };
        format!(
            "Pruned: {} — {what} removed by the store's retention; the rollout, its plan and its audit entries are kept",
            utc_timestamp(status.pruned_at_unix_ms)
        )
    })
}

/// A request that is not (yet) a rollout: its state, when it runs, and each
/// gate as it stands now, with what is still missing.
fn describe_request(status: &RolloutStatus) -> String {
    let mut lines = vec![
        format!("Request: {}", status.rollout_id),
        format!("Kind: {}", status.kind),
        format!(
            "Procedure: {} ({} routines)",
            status.label, status.routine_count
        ),
        format!(
            "Environment: {} (zone {}, target {})",
            status.environment.to_uppercase(),
            status.zone,
            status.target
        ),
        format!("State: {}", status.state),
    ];
    if status.run_at_unix_ms > 0 {
        lines.push(format!(
            "Runs At: {} (window {})",
            utc_timestamp(status.run_at_unix_ms),
            status.window
        ));
    }
    lines.extend([
        format!("Requested By: {}", status.actor),
        format!("Plan: {} (commit {})", status.plan_id, status.commit_sha),
        format!("Requested: {}", utc_timestamp(status.created_at_unix_ms)),
    ]);
    if !status.request_rollout_id.is_empty() {
        lines.push(format!("Rollout: {}", status.request_rollout_id));
    }
    if !status.request_note.is_empty() {
        lines.push(format!("Note: {}", status.request_note));
    }
    lines.push(format!("Trace ID: {}", status.trace_id));
    for gate in &status.gates {
        lines.push(gate_line(gate));
    }
    let missing: Vec<&str> = status
        .gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.gate.as_str())
        .collect();
    if !missing.is_empty() {
        lines.push(format!("Waiting For: {}", missing.join(", ")));
    }
    lines.join("\n") + "\n"
}

/// `Gate ✅ approval: approved by …`; pending ⏳, closed window 🕒, failed ❌.
fn gate_line(gate: &pgrollout_shared::proto::GateOutcome) -> String {
    let mark = match gate.state.as_str() {
        _ if gate.passed => mark(Mark::Ok),
        "pending" => mark(Mark::Waiting),
        "scheduled" => mark(Mark::Closed),
        _ => mark(Mark::Fail),
    };
    format!("Gate {mark} {}: {}", gate.gate, gate.reason)
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}
