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
use super::failover::{Failover, Lost};
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
    let (mut client, reached) = connect::controller_reached(address, tls).await?;
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
    let mut last_seq = 0u64;
    let why = loop {
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
                    last_seq = last_seq.max(event.seq);
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
                Some(Body::Parked(_)) | Some(Body::InDoubt(_)) | None => {}
                Some(Body::Fleet(report)) => fleet = Some(report),
            },
            Ok(None) => break None,
            Err(status) => break Some(status.message().to_owned()),
        }
    };
    // Issue 18: another listed controller follows the rollout on from the
    // store (a fleet's targets are its driver's to follow).
    let mut failover = Failover::new(address, reached, tls);
    match rollout.as_ref().filter(|r| r.fleet_targets == 0) {
        Some(started) if failover.has_others() => {
            let lost = Lost::Rollout {
                id: started.rollout_id.clone(),
                after_seq: last_seq,
            };
            let why = why
                .as_deref()
                .unwrap_or("it ended the stream before the result");
            if let Some(stream) = failover.reopen(&lost, why).await {
                return follow_elsewhere(stream, failover, rollout, quiet).await;
            }
        }
        _ => {
            if let Some(why) = why {
                eprintln!("pgrollout: lost the controller mid-operation: {why}");
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

/// The rest of an operation's rollout, followed on another controller.
async fn follow_elsewhere(
    stream: tonic::Streaming<pgrollout_shared::proto::RolloutUpdate>,
    failover: Failover<'_>,
    rollout: Option<RolloutStarted>,
    quiet: bool,
) -> Result<Followed, (ExitCode, String)> {
    let ending = super::follow::follow_updates(stream, false, Some(failover), |update| {
        if let super::follow::Update::Event(event) = update {
            if let Some(line) = report::step_line(event).filter(|_| !quiet) {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        }
    })
    .await;
    match ending {
        Ok(super::follow::Ending::Finished(followed)) => Ok(Followed {
            // The rollout as the controller first asked announced it.
            rollout: rollout.or(followed.rollout),
            result: followed.result,
            fleet: followed.fleet,
        }),
        Ok(super::follow::Ending::Parked(parked)) => Err((
            ExitCode::DeploymentFailed,
            format!("unexpected request {} for an operation", parked.request_id),
        )),
        Err(refusal) => Err(refusal),
    }
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
