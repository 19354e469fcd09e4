//! Calling the controller for a plan-less operation (rollback, disable,
//! enable, history, adopt) and following its rollout to the result, printing each
//! finished step as the agent reports it.

use pgrollout_shared::text::escaped;
use std::io::Write;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    rollout_update::Body, JobResult, RollbackRequest, RolloutStarted, RoutineRequest,
};

use super::connect::{self, OperatorTls};
use super::report;
use super::style;
use crate::auth::CLAIMED_ACTOR_HEADER;

/// Which call to make.
pub enum Call {
    Rollback(RollbackRequest),
    Disable(RoutineRequest),
    Enable(RoutineRequest),
    History(RoutineRequest),
    Retry(pgrollout_shared::proto::RetryRequest),
    Adopt(pgrollout_shared::proto::AdoptRequest),
    /// Issue 24: continue a halted fleet rollout.
    Resume(pgrollout_shared::proto::ResumeFleetRequest),
}

/// An operation that produced its result.
pub struct Followed {
    pub rollout: Option<RolloutStarted>,
    pub result: JobResult,
    /// A fleet rollout's per-target report (issue 24: resume, rollback of a fleet).
    pub fleet: Option<pgrollout_shared::proto::FleetReport>,
}

/// Makes the call and follows it; step lines go to stdout unless `quiet`.
/// `Err` carries the exit code and message when there is no result.
pub async fn call_and_follow(
    address: &str,
    tls: &OperatorTls,
    call: Call,
    quiet: bool,
) -> Result<Followed, (ExitCode, String)> {
    let mut client = connect::controller(address, tls).await?;
    // Issue 19: signed with the operator's key, for agents with [approvals].
    let call = super::signing::sign_operation(&mut client, address, tls, call).await?;
    let response = match call {
        Call::Rollback(r) => client.rollback(with_actor(r)).await,
        Call::Disable(r) => client.disable(with_actor(r)).await,
        Call::Enable(r) => client.enable(with_actor(r)).await,
        Call::History(r) => client.history(with_actor(r)).await,
        Call::Retry(r) => client.retry(with_actor(r)).await,
        Call::Adopt(r) => client.adopt(with_actor(r)).await,
        Call::Resume(r) => client.resume_fleet(with_actor(r)).await,
    };
    let mut stream = response
        .map_err(|status| connect::refusal(&status, address))?
        .into_inner();
    let mut rollout: Option<RolloutStarted> = None;
    let mut fleet = None;
    loop {
        match stream.message().await {
            Ok(Some(update)) => match escaped(update, "pgrollout.v1.RolloutUpdate").body {
                Some(Body::Started(started)) => {
                    if !quiet {
                        println!(
                            "rollout {} on agent {} (zone {}), trace {}",
                            started.rollout_id, started.agent_name, started.zone, started.trace_id
                        );
                    }
                    rollout = Some(started);
                }
                Some(Body::Event(event)) => {
                    if let Some(line) = report::step_line(&event).filter(|_| !quiet) {
                        println!("{line}");
                        let _ = std::io::stdout().flush();
                    }
                }
                Some(Body::Finished(result)) => {
                    return Ok(Followed {
                        rollout,
                        result,
                        fleet,
                    })
                }
                // Operations are not parked or scheduled.
                Some(Body::Parked(_)) | None => {}
                Some(Body::Fleet(report)) => fleet = Some(report),
            },
            Ok(None) => break,
            Err(status) => {
                eprintln!(
                    "pgrollout: lost the controller mid-operation: {}",
                    status.message()
                );
                break;
            }
        }
    }
    let which = rollout
        .as_ref()
        .map(|r| r.rollout_id.as_str())
        .unwrap_or("(unknown id)");
    Err((
        ExitCode::DeploymentFailed,
        format!(
            "the rollout {which} ended without a result; its state is unknown — check the controller's log and \
             `pgrollout history`"
        ),
    ))
}

fn with_actor<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(actor) = super::follow::operator_name().parse() {
        request.metadata_mut().insert(CLAIMED_ACTOR_HEADER, actor);
    }
    request
}

/// Prints the job's warnings, one per line, on stdout where the report is.
pub fn print_warnings(result: &JobResult) {
    for warning in &result.warnings {
        println!("{} {warning}", style::warning_prefix());
    }
}
