//! `pgrollout disable <procedure> <environment> [--revoke]` and `pgrollout
//! enable <procedure> <environment>`: the emergency switch of SEED.md
//! ("Disable Procedure (< 30 seconds)") and its exact undo.

use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{Outcome, RoutineRequest};

use super::connect::OperatorTls;
use super::operation::{call_and_follow, print_warnings, Call};
use super::style::{mark, Mark};

#[derive(clap::Args)]
pub struct DisableArgs {
    /// Routine name (all overloads), e.g. reconcilemupstream.
    procedure: String,
    /// Environment from the controller's config, e.g. prod.
    environment: String,
    /// Revoke EXECUTE from every grantee (PUBLIC and the owner included)
    /// instead of renaming to <name>_disabled_<yyyymmdd>.
    #[arg(long)]
    revoke: bool,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

#[derive(clap::Args)]
pub struct EnableArgs {
    /// Routine name (all overloads), e.g. reconcilemupstream.
    procedure: String,
    /// Environment from the controller's config, e.g. prod.
    environment: String,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

pub async fn disable(address: &str, tls: &OperatorTls, args: DisableArgs) -> ExitCode {
    let how = if args.revoke {
        "revoking EXECUTE on"
    } else {
        "renaming"
    };
    println!(
        "pgrollout: disabling {} in {} ({how} every routine of the name)",
        args.procedure, args.environment
    );
    let request = request(
        &args.procedure,
        &args.environment,
        args.revoke,
        args.agent_wait,
    );
    finish(call_and_follow(address, tls, Call::Disable(request), false).await)
}

pub async fn enable(address: &str, tls: &OperatorTls, args: EnableArgs) -> ExitCode {
    println!(
        "pgrollout: enabling {} in {} (undoing its latest disable exactly)",
        args.procedure, args.environment
    );
    let request = request(&args.procedure, &args.environment, false, args.agent_wait);
    finish(call_and_follow(address, tls, Call::Enable(request), false).await)
}

fn request(procedure: &str, environment: &str, revoke: bool, wait: Duration) -> RoutineRequest {
    RoutineRequest {
        environment: environment.to_owned(),
        procedure: procedure.to_owned(),
        revoke,
        traceparent: crate::telemetry::spans::current_traceparent(),
        agent_wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        // Signed on the way out (`signing::sign_operation`).
        ..Default::default()
    }
}

fn finish(followed: Result<super::operation::Followed, (ExitCode, String)>) -> ExitCode {
    let followed = match followed {
        Ok(followed) => followed,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let result = &followed.result;
    for routine in &result.restored {
        println!(
            "{}: {} ({}; {})",
            routine.identity, routine.change, routine.detail, routine.source
        );
    }
    print_warnings(result);
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    if code == ExitCode::Success {
        println!("Status: {} SUCCESS — {}", mark(Mark::Ok), result.message);
    } else {
        println!("Status: {} FAILED (exit {})", mark(Mark::Fail), code.code());
        eprintln!("pgrollout: {}", result.message);
    }
    code
}
