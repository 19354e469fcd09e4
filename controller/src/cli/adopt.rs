//! `pgrollout adopt <environment> <procedure…> --reason TEXT` (issue 20), and
//! the adoption `pgrollout deploy … --adopt-drift --reason TEXT` runs before
//! its deploy: the live state of routines changed by hand is recorded in the
//! environment's ledger (approver or admin; audited `drift.adopted`), so the
//! `no_drift` gate lets a deploy over them through and a rollback of that
//! deploy restores the hand-made version.

use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{AdoptRequest, JobResult, Outcome};

use super::connect::OperatorTls;
use super::operation::{call_and_follow, print_warnings, Call};
use super::style::{mark, Mark};

#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 adopted · 1 refused, nothing recorded (a routine that did not drift or that \
                  pgrollout never deployed, no --reason, not an approver or admin) · 2 failed, rolled back."
)]
pub struct AdoptArgs {
    /// Environment from the controller's config, e.g. prod.
    environment: String,
    /// The drifted routines (`name`, `schema.name` or `schema.name(types)`), as `pgrollout drift` lists them.
    #[arg(required = true)]
    procedures: Vec<String>,
    /// Why the hand change is kept (required): written to the audit log and the ledger.
    #[arg(long)]
    reason: Option<String>,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

pub async fn run(address: &str, tls: &OperatorTls, args: AdoptArgs) -> ExitCode {
    let Some(reason) = args.reason.filter(|r| !r.trim().is_empty()) else {
        eprintln!("pgrollout: adopt needs --reason: say why the hand change is kept");
        return ExitCode::ValidationFailed;
    };
    println!(
        "pgrollout: adopting the hand changes of {} in {} (recording their live state in the ledger)",
        args.procedures.join(", "),
        args.environment
    );
    let request = request(
        &args.environment,
        args.procedures,
        &reason,
        false,
        args.agent_wait,
    );
    match adopt(address, tls, request, false).await {
        Ok(result) => {
            println!("Status: {} SUCCESS — {}", mark(Mark::Ok), result.message);
            ExitCode::Success
        }
        Err(code) => code,
    }
}

/// `deploy --adopt-drift`: adopts those of the plan's routines that drifted
/// (none is fine). `Err`: the exit code, the reason already printed.
pub async fn before_deploy(
    address: &str,
    tls: &OperatorTls,
    environment: &str,
    identities: Vec<String>,
    reason: &str,
    agent_wait: Duration,
    quiet: bool,
) -> Result<(), ExitCode> {
    let request = request(environment, identities, reason, true, agent_wait);
    adopt(address, tls, request, quiet).await.map(|_| ())
}

fn request(
    environment: &str,
    procedures: Vec<String>,
    reason: &str,
    only_drifted: bool,
    wait: Duration,
) -> AdoptRequest {
    AdoptRequest {
        environment: environment.to_owned(),
        procedures,
        reason: reason.to_owned(),
        only_drifted,
        traceparent: crate::telemetry::spans::current_traceparent(),
        agent_wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        // Signed on the way out (`signing::sign_operation`).
        ..Default::default()
    }
}

/// Runs the adoption and prints each routine adopted with its diffs (unless
/// `quiet`: `--output json`, whose stdout is one document).
async fn adopt(
    address: &str,
    tls: &OperatorTls,
    request: AdoptRequest,
    quiet: bool,
) -> Result<JobResult, ExitCode> {
    let followed = match call_and_follow(address, tls, Call::Adopt(request), quiet).await {
        Ok(followed) => followed,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return Err(code);
        }
    };
    let result = followed.result;
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    if quiet {
        if code != ExitCode::Success {
            eprintln!("pgrollout: adoption failed: {}", result.message);
            return Err(code);
        }
        return Ok(result);
    }
    let findings = result.drift.clone().unwrap_or_default().findings;
    for routine in &result.restored {
        println!(
            "{}: {} ({}; {})",
            routine.identity, routine.change, routine.detail, routine.source
        );
        let finding = findings.iter().find(|f| f.identity == routine.identity);
        // Owner and comment changes are lines of their own; the definition
        // and ACL items are diffs.
        for detail in finding.into_iter().flat_map(|f| &f.details) {
            println!("  {detail}");
        }
        for diff in finding
            .into_iter()
            .flat_map(|f| [&f.definition_diff, &f.acl_diff])
        {
            for line in diff.lines() {
                println!("  {line}");
            }
        }
    }
    print_warnings(&result);
    if code != ExitCode::Success {
        println!(
            "Status: {} adoption FAILED (exit {})",
            mark(Mark::Fail),
            code.code()
        );
        eprintln!("pgrollout: {}", result.message);
        return Err(code);
    }
    Ok(result)
}
