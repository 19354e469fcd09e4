//! Parked requests (`p-…`) from the operator's side: `pgrollout cancel`, and
//! following a request to the end of the rollout it becomes (`status
//! --follow`, `approve --follow`) instead of polling its status.

use pgrollout_shared::text::escaped;
use std::io::Write;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    CancelRequest, FollowRequestRequest, FollowRolloutRequest, GetRolloutRequest, Outcome,
};

use super::connect::{self, OperatorTls};
use super::failover::Failover;
use super::follow::{follow_updates, parked_line, Ending, Update};
use super::report;

#[derive(clap::Args)]
pub struct CancelArgs {
    /// The request id (`p-…`) that `deploy`, `status` or `rollouts` printed.
    request: String,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "")]
    reason: String,
}

pub async fn cancel(address: &str, tls: &OperatorTls, args: CancelArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let request = CancelRequest {
        request_id: args.request,
        reason: args.reason,
    };
    match client.cancel(request).await {
        Ok(response) => {
            println!("{}", response.into_inner().message);
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            fail(code, &message)
        }
    }
}

/// Follows a request (`p-…`) until the rollout it becomes has a result, or
/// a rollout (`r-…`, issue 18: from the store, whichever controller records
/// it): prints its state changes and steps, the SMOKE TEST and DEPLOYMENT
/// LOG blocks, and exits with the rollout's code (1 if the request ended
/// without running). With several controllers listed, one lost on the way
/// is replaced by another (`failover.rs`).
pub async fn follow_request(address: &str, tls: &OperatorTls, request_id: &str) -> ExitCode {
    let (mut client, reached) = match connect::controller_reached(address, tls).await {
        Ok(connected) => connected,
        Err((code, message)) => return fail(code, &message),
    };
    let response = if request_id.starts_with("p-") {
        let request = FollowRequestRequest {
            request_id: request_id.to_owned(),
        };
        client.follow_request(request).await
    } else {
        let request = FollowRolloutRequest {
            rollout_id: request_id.to_owned(),
            after_seq: 0,
        };
        client.follow_rollout(request).await
    };
    let stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let (code, message) = connect::refusal(&status, &reached);
            return fail(code, &message);
        }
    };
    let failover = Failover::new(address, reached, tls);
    let ending = follow_updates(stream, true, Some(failover), |update| {
        match update {
            Update::Started(started) => {
                // A batch that waited for approvals or its window shows its
                // order now, as the controller computed it.
                if let Some(order) = started.order.as_ref().filter(|o| o.routines.len() > 1) {
                    print!("{}", report::order_block(order));
                }
                println!("{}", report::rollout_line(started))
            }
            Update::Event(event) => {
                if let Some(line) = report::step_line(event) {
                    println!("{line}");
                }
            }
            Update::Parked(parked) => println!("{}", parked_line(parked)),
        }
        let _ = std::io::stdout().flush();
    })
    .await;
    let followed = match ending {
        Ok(Ending::Finished(followed)) => *followed,
        Ok(Ending::Parked(parked)) => {
            return fail(
                ExitCode::ValidationFailed,
                &format!("request {request_id} is {} and did not run", parked.state),
            )
        }
        Err((code, message)) => return fail(code, &message),
    };
    let outcome = Outcome::try_from(followed.result.outcome).unwrap_or(Outcome::Unspecified);
    let code = ExitCode::from_outcome(outcome);
    let environment = followed
        .rollout
        .as_ref()
        .map(|r| r.environment.clone())
        .unwrap_or_default();
    print!(
        "{}",
        report::smoke_blocks(&followed.result.smoke, &environment)
    );
    if let Some(rollout) = &followed.rollout {
        let request = GetRolloutRequest {
            rollout_id: rollout.rollout_id.clone(),
        };
        // The controller followed may be another than the one first asked
        // (failover): the log is read from whichever answers now.
        let answer = match client.get_rollout(request.clone()).await {
            Ok(status) => Ok(status),
            Err(_) => match connect::controller(address, tls).await {
                Ok(mut again) => again.get_rollout(request).await,
                Err((_, message)) => Err(tonic::Status::unavailable(message)),
            },
        };
        match answer {
            Ok(status) => print!(
                "{}",
                super::log::render(&escaped(status.into_inner(), "pgrollout.v1.RolloutStatus"))
            ),
            // The log could not be read (the controller went away, say):
            // the outcome is known all the same.
            Err(status) => println!(
                "rollout {} ended with exit {}; its DEPLOYMENT LOG: `pgrollout log {}` ({})",
                rollout.rollout_id,
                code.code(),
                rollout.rollout_id,
                status.message()
            ),
        }
    }
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", followed.result.message);
    }
    code
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}
