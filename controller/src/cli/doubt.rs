//! `pgrollout retry <rollout>` and `pgrollout resolve <rollout>`: what an
//! operator does with a rollout left `unknown` by a lost agent or a
//! controller restart, once the agent cannot settle it by itself.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{Outcome, ResolveRequest, RetryRequest};

use super::connect::{self, OperatorTls};
use super::operation::{call_and_follow, print_warnings, Call};

#[derive(clap::Args)]
pub struct RetryArgs {
    /// The rollout in doubt (`r-…`, state unknown).
    rollout: String,
}

#[derive(clap::Args)]
// The verdict group holds the two flags only: a struct-level `#[group]`
// would take every field into it, refusing `<ROLLOUT> --succeeded --reason`.
#[command(group(clap::ArgGroup::new("verdict").required(true).multiple(false)))]
pub struct ResolveArgs {
    /// The rollout in doubt (`r-…`, state unknown).
    rollout: String,
    /// The change is live: the target's ledger has the job's rows.
    #[arg(long, group = "verdict")]
    succeeded: bool,
    /// Nothing was applied: the ledger has no row for the job.
    #[arg(long, group = "verdict")]
    failed: bool,
    /// What you checked (required; recorded in the audit log).
    #[arg(long)]
    reason: String,
}

pub async fn retry(address: &str, tls: &OperatorTls, args: RetryArgs) -> ExitCode {
    let request = RetryRequest {
        rollout_id: args.rollout,
    };
    let followed = match call_and_follow(address, tls, Call::Retry(request), false).await {
        Ok(followed) => followed,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let result = &followed.result;
    print_warnings(result);
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    let attempt = result.attempt;
    if result.replayed_from_ledger {
        println!(
            "attempt {attempt}: the earlier attempt had committed; the ledger records it and nothing was applied \
             again"
        );
    }
    println!("attempt {attempt}: {}", result.message);
    code
}

pub async fn resolve(address: &str, tls: &OperatorTls, args: ResolveArgs) -> ExitCode {
    let verdict = if args.succeeded {
        "succeeded"
    } else {
        "failed"
    };
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let request = ResolveRequest {
        rollout_id: args.rollout,
        verdict: verdict.into(),
        reason: args.reason,
    };
    match client.resolve(request).await {
        Ok(response) => {
            println!("{}", response.into_inner().message);
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            eprintln!("pgrollout: {message}");
            code
        }
    }
}
