//! `pgrollout resume <fleet-rollout-id>` (issue 24): a halted fleet rollout
//! goes on with its targets that did not succeed — the failed one again,
//! then the untouched waves — with the same plan; prints each target as it
//! ends, then the fleet's table, and exits with the worst code.

use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{FleetReport, ResumeFleetRequest};

use super::connect::OperatorTls;
use super::operation::{call_and_follow, Call, Followed};
use super::output::{self, OutputFlag};

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The fleet rollout's id (`f-…`), as `deploy` and `status` print it.
    fleet_rollout: String,
    /// How long the controller may wait for an agent of each zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn run(address: &str, tls: &OperatorTls, args: ResumeArgs) -> ExitCode {
    let json = args.output.json();
    if !args.fleet_rollout.starts_with("f-") {
        eprintln!(
            "pgrollout: {:?} is not a fleet rollout (their ids start with f-); a one-target rollout in doubt is \
             retried with `pgrollout retry`",
            args.fleet_rollout
        );
        return ExitCode::ValidationFailed;
    }
    if !json {
        println!("pgrollout: resuming fleet rollout {}", args.fleet_rollout);
    }
    let request = ResumeFleetRequest {
        fleet_id: args.fleet_rollout.clone(),
        agent_wait_ms: u64::try_from(args.agent_wait.as_millis()).unwrap_or(u64::MAX),
        // Signed on the way out (`signing::sign_operation`, issue 19).
        ..Default::default()
    };
    match call_and_follow(address, tls, Call::Resume(request), json).await {
        Ok(followed) => match &followed.fleet {
            Some(fleet) => fleet_ending(fleet, &followed, json),
            None => {
                eprintln!("pgrollout: {}", followed.result.message);
                ExitCode::DeploymentFailed
            }
        },
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            code
        }
    }
}

/// The end of a command that ran a fleet rollout (`resume`, `rollback
/// --rollout f-…`): the table (or JSON document) and the fleet's code.
pub fn fleet_ending(fleet: &FleetReport, followed: &Followed, json: bool) -> ExitCode {
    let code = super::fleet_report::exit_code(fleet);
    if json {
        let mut document = output::run_document(
            followed.rollout.as_ref(),
            None,
            Some(&followed.result),
            code,
        );
        document["fleet"] = super::fleet_report::json(fleet);
        output::print(&document);
    } else {
        print!("{}", super::fleet_report::text(fleet));
    }
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", followed.result.message);
    }
    code
}
