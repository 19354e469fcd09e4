//! `pgrollout rollback <procedure> <environment> [--to <ledger-id|plan-id>]
//! [--emergency --reason TEXT]` and `pgrollout rollback --rollout <id>`:
//! restore earlier versions exactly, print each step, the SMOKE TEST blocks
//! and a ROLLBACK LOG, and exit as a deploy does (0 / 1 refused, nothing
//! changed / 2 failed, rolled back / 3 smoke test failed).

use std::time::{Duration, Instant};

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{JobResult, Outcome, RollbackRequest, RolloutStarted};

use super::connect::OperatorTls;
use super::operation::{call_and_follow, print_warnings, Call};
use super::output::{self, OutputFlag};
use super::report::{self, summarised, utc_timestamp};
use super::style::{mark, Mark};

const RULE: &str = "===========================================";

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// Routine name (all overloads), e.g. reconcilemupstream; not with --rollout.
    procedure: Option<String>,
    /// Environment from the controller's config; optional with --rollout.
    environment: Option<String>,
    /// Undo every routine this rollout changed, in reverse deploy order.
    #[arg(long, conflicts_with = "to")]
    rollout: Option<String>,
    /// Go back to this version instead of the previous one: a ledger id (see
    /// `pgrollout history`) or a plan id (8+ hex digits; `plan:` if all digits).
    #[arg(long)]
    to: Option<String>,
    /// Skip the smoke tests and act at once; needs --reason, which is audited.
    #[arg(long, requires = "reason")]
    emergency: bool,
    /// Why this is an emergency (recorded in the audit log and the ledger).
    #[arg(long, requires = "emergency")]
    reason: Option<String>,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn run(address: &str, tls: &OperatorTls, args: RollbackArgs) -> ExitCode {
    let started = Instant::now();
    let (procedure, environment) = match (&args.rollout, &args.procedure, &args.environment) {
        // With --rollout, the one positional (if any) is the environment.
        (Some(_), environment, None) => (String::new(), environment.clone().unwrap_or_default()),
        (Some(_), _, Some(_)) => {
            return fail(
                ExitCode::ValidationFailed,
                "--rollout undoes a whole rollout: give no procedure with it (the rollout knows its routines)",
            )
        }
        (None, Some(procedure), Some(environment)) => (procedure.clone(), environment.clone()),
        (None, _, _) => {
            return fail(
                ExitCode::ValidationFailed,
                "usage: pgrollout rollback <procedure> <environment> [--to <ledger-id|plan-id>] [--emergency --reason TEXT], \
                 or pgrollout rollback --rollout <id>",
            )
        }
    };
    let reason = args.reason.clone().unwrap_or_default();
    if args.emergency && reason.trim().is_empty() {
        return fail(
            ExitCode::ValidationFailed,
            "--emergency needs a --reason that says why; it goes into the audit log",
        );
    }
    let what = match &args.rollout {
        Some(rollout) => format!("rollout {rollout}"),
        None => format!("{procedure} in {environment}"),
    };
    let mode = if args.emergency {
        format!(" — EMERGENCY: {}", reason.trim())
    } else {
        String::new()
    };
    let to = args
        .to
        .as_ref()
        .map(|to| format!(" to {to}"))
        .unwrap_or_default();
    let json = args.output.json();
    if !json {
        println!("pgrollout: rolling back {what}{to}{mode}");
    }
    let request = RollbackRequest {
        environment: environment.clone(),
        procedure: procedure.clone(),
        rollout_id: args.rollout.clone().unwrap_or_default(),
        to: args.to.clone().unwrap_or_default(),
        emergency: args.emergency,
        reason: reason.trim().to_owned(),
        traceparent: crate::telemetry::spans::current_traceparent(),
        agent_wait_ms: u64::try_from(args.agent_wait.as_millis()).unwrap_or(u64::MAX),
        // Signed on the way out (`signing::sign_operation`).
        ..Default::default()
    };
    let followed = match call_and_follow(address, tls, Call::Rollback(request), json).await {
        Ok(followed) => followed,
        Err((code, message)) => return fail(code, &message),
    };
    let result = &followed.result;
    // Issue 24: a fleet rollout is undone target by target; its table says
    // which were rolled back.
    if let Some(fleet) = &followed.fleet {
        return super::resume::fleet_ending(fleet, &followed, json);
    }
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    let environment = followed
        .rollout
        .as_ref()
        .map(|r| r.environment.clone())
        .unwrap_or(environment);
    let label = if procedure.is_empty() {
        what.clone()
    } else {
        procedure
    };
    if json {
        output::print(&output::run_document(
            followed.rollout.as_ref(),
            None,
            Some(result),
            code,
        ));
        if code != ExitCode::Success {
            eprintln!("pgrollout: {}", result.message);
        }
        return code;
    }
    print!("{}", report::smoke_blocks(&result.smoke, &environment));
    print!(
        "{}",
        rollback_log(&Log {
            label: &label,
            environment: &environment,
            rollout: followed.rollout.as_ref(),
            result,
            emergency: args.emergency.then_some(reason.trim()),
            code,
            wall_time: started.elapsed(),
        })
    );
    print_warnings(result);
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
    }
    code
}

struct Log<'a> {
    label: &'a str,
    environment: &'a str,
    rollout: Option<&'a RolloutStarted>,
    result: &'a JobResult,
    emergency: Option<&'a str>,
    code: ExitCode,
    wall_time: Duration,
}

/// `Routines: a [restored from …]` for a few; for more, one per line (each
/// names its source, a long path) up to the report's limit, then a count.
fn routines_lines(routines: &[String]) -> String {
    match routines.len() {
        0 => "Routines: none".to_owned(),
        n if n <= report::INLINE_LIMIT => format!("Routines: {}", routines.join(", ")),
        n => {
            let mut text = format!("Routines: {n}");
            for routine in routines.iter().take(report::LIST_LIMIT) {
                text.push_str(&format!("\n  {routine}"));
            }
            if n > report::LIST_LIMIT {
                text.push('\n');
                text.push_str(&report::more_line(n - report::LIST_LIMIT));
            }
            text
        }
    }
}

/// The ROLLBACK LOG block, in the shape of SEED.md's DEPLOYMENT LOG.
fn rollback_log(log: &Log<'_>) -> String {
    let result = log.result;
    let routines: Vec<String> = result
        .restored
        .iter()
        .map(|r| {
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!("; {}", r.detail.trim_start_matches("; "))
            };
            format!("{} [{} from {}{detail}]", r.identity, r.change, r.source)
        })
        .collect();
    let smoke = match (log.emergency, result.smoke.is_empty()) {
        (Some(_), _) => format!("{} SKIPPED (emergency)", mark(Mark::Skipped)),
        (None, true) => format!("{} NOT RUN", mark(Mark::Skipped)),
        (None, false) if result.smoke.iter().all(|r| r.passed) => {
            format!("{} PASS", mark(Mark::Ok))
        }
        (None, false) => format!("{} FAIL", mark(Mark::Fail)),
    };
    let status = match log.code {
        ExitCode::Success if result.replayed_from_ledger => {
            format!(
                "{} SUCCESS (already applied; nothing changed)",
                mark(Mark::Ok)
            )
        }
        ExitCode::Success => format!("{} SUCCESS", mark(Mark::Ok)),
        code => format!("{} FAILED (exit {})", mark(Mark::Fail), code.code()),
    };
    let mut lines = vec![
        RULE.to_owned(),
        "ROLLBACK LOG".to_owned(),
        RULE.to_owned(),
        format!(
            "Timestamp: {}",
            utc_timestamp(log.rollout.map(|r| r.started_at_unix_ms).unwrap_or_default())
        ),
        format!("Procedure: {}", log.label),
        format!("Environment: {}", log.environment.to_uppercase()),
        routines_lines(&routines),
        format!(
            "Rolled Back By: {}",
            log.rollout.map(|r| r.actor.as_str()).unwrap_or("?")
        ),
        match log.emergency {
            Some(reason) => format!(
                "Mode: EMERGENCY — reason: {reason} (smoke tests skipped; a rollback needs the deployer role, no approval; audited as rollback.emergency)"
            ),
            None => "Mode: normal".to_owned(),
        },
        format!("Smoke Test: {smoke}"),
        format!(
            "Backup: {}",
            if result.backup_path.is_empty() {
                "none".to_owned()
            } else {
                format!("{} (sha256 {})", result.backup_path, result.backup_sha256)
            }
        ),
        format!("Duration: {:.2} seconds", log.wall_time.as_secs_f64()),
        format!("Status: {status}"),
    ];
    if let Some(rollout) = log.rollout {
        lines.push(format!("Rollout: {}", rollout.rollout_id));
        lines.push(format!("Trace ID: {}", rollout.trace_id));
    }
    if !result.ledger_ids.is_empty() {
        let ids: Vec<String> = result.ledger_ids.iter().map(i64::to_string).collect();
        lines.push(format!("Ledger: {}", summarised(&ids, report::LIST_LIMIT)));
    }
    lines.push(RULE.to_owned());
    lines.join("\n") + "\n"
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}
