//! Submitting a plan to the controller and following the rollout to its
//! result: shared by `deploy`, `smoke` and `batch`, which differ only in what
//! they print along the way.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    rollout_update::Body, DeployRequest, JobEvent, JobResult, Plan, RequestParked, RolloutStarted,
    RolloutUpdate,
};
use pgrollout_shared::text::escaped;

use pgrollout_shared::proto::control_client::ControlClient;
use tonic::transport::Channel;

use super::connect::{self, OperatorTls};
use super::failover::{Failover, Lost};
use super::style::{mark, Mark};
use crate::auth::CLAIMED_ACTOR_HEADER;

/// What to run, where.
pub struct Submission<'a> {
    pub address: &'a str,
    pub tls: &'a OperatorTls,
    pub environment: &'a str,
    pub plan: Plan,
    pub call: ControlCall,
    pub continue_on_error: bool,
    pub agent_wait: std::time::Duration,
    pub attachments: &'a GateAttachments,
    pub window: &'a WindowFlags,
    /// A connection opened ahead (while the CLI read the project); `None`
    /// connects here.
    pub connected: Option<Connecting>,
    /// A fleet environment's failure policy (issue 24).
    pub fleet: FleetFlags,
}

/// What a failed target does to the rest of a fleet environment's rollout
/// (issue 24); by default the rollout halts, the rest left untouched.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct FleetFlags {
    /// Fleet environments: go on with the other targets after one failed.
    #[arg(long, conflicts_with = "rollback_on_failure")]
    pub continue_on_error: bool,
    /// Fleet environments: after a failed target, roll back every target
    /// already done, in reverse order.
    #[arg(long)]
    pub rollback_on_failure: bool,
}

/// A connection to the controller being opened in the background.
pub type Connecting = tokio::task::JoinHandle<Result<Ahead, (ExitCode, String)>>;

/// What [`connect_ahead`] prepared: the connection and, for an operator who
/// signs, the controller's answer about the environment the statement will
/// name (asked on the connection as soon as it is up).
pub struct Ahead {
    client: ControlClient<Channel>,
    /// The listed controller that answered.
    reached: String,
    signing_context: Option<super::signing::AskedContext>,
}

/// Starts connecting to the controller now, so the TLS handshake — and an
/// operator's `SigningContext` round trip for `environment` — overlap
/// whatever the CLI does before it submits (issue 15: the project's parse).
pub fn connect_ahead(address: &str, tls: &OperatorTls, environment: &str) -> Connecting {
    let (address, tls, environment) = (address.to_owned(), tls.clone(), environment.to_owned());
    tokio::spawn(async move {
        let (mut client, reached) = connect::controller_reached(&address, &tls).await?;
        // Only an operator with a key signs (`signing::signer`); the answer,
        // a refusal included, is used or reported when the plan is signed.
        let signing_context = match tls.cert_and_key() {
            Some(_) => Some(super::signing::ask_context(&mut client, &environment).await),
            None => None,
        };
        Ok(Ahead {
            client,
            reached,
            signing_context,
        })
    })
}

/// What happens to a deploy that cannot run right now.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WindowFlags {
    /// Outside the environment's window, refuse (exit 1, naming the gate)
    /// instead of scheduling the rollout for the window's next opening.
    #[arg(long, conflicts_with = "follow")]
    pub no_wait: bool,
    /// When the deploy is scheduled for its window or parked for approvals,
    /// stay attached until its rollout has run, and exit with its code.
    /// Without it, a scheduled deploy prints when it runs and exits 0.
    #[arg(long)]
    pub follow: bool,
}

/// Which of the controller's plan-running calls to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlCall {
    Deploy,
    Smoke,
    /// The dry-run check (`pgrollout check`).
    Check,
    /// The performance probes (`pgrollout perf`).
    Perf,
}

/// What an environment's gates may ask the operator to attach.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GateAttachments {
    /// Change-control ticket (the change_ticket gate).
    #[arg(long)]
    pub ticket: Option<String>,
    /// Runbook for this change: a link or a file path (the runbook gate).
    #[arg(long)]
    pub runbook: Option<String>,
    /// Rollback plan: a link or a file path (the rollback_plan gate).
    #[arg(long)]
    pub rollback_plan: Option<String>,
}

/// Something the controller streamed before the result.
pub enum Update<'a> {
    Started(&'a RolloutStarted),
    Event(&'a JobEvent),
    /// The request is parked (approvals), scheduled (window), or ended
    /// without running.
    Parked(&'a RequestParked),
}

/// A rollout that produced its result.
pub struct Followed {
    pub rollout: Option<RolloutStarted>,
    pub result: JobResult,
    /// A fleet rollout's per-target report (issue 24).
    pub fleet: Option<pgrollout_shared::proto::FleetReport>,
}

/// How a followed stream ended.
pub enum Ending {
    Finished(Box<Followed>),
    /// Parked and not followed further: scheduled (exit 0), or ended without
    /// running (cancelled, rejected, refused: exit 1).
    Parked(RequestParked),
}

impl Ending {
    /// The rollout's result, or the exit code (and message) of a request
    /// that did not run: 0 when it waits for its window by design.
    pub fn into_result(self) -> Result<Followed, (ExitCode, String)> {
        match self {
            Ending::Finished(followed) => Ok(*followed),
            Ending::Parked(parked) if waits(&parked.state) => {
                Err((ExitCode::Success, String::new()))
            }
            Ending::Parked(parked) => Err((
                ExitCode::ValidationFailed,
                format!(
                    "request {} was {} and did not run: {}",
                    parked.request_id, parked.state, parked.message
                ),
            )),
        }
    }
}

/// Whether a parked request is still waiting (rather than ended).
fn waits(state: &str) -> bool {
    matches!(state, "awaiting_approval" | "scheduled" | "starting")
}

/// The line an operator reads for a parked request.
pub fn parked_line(parked: &RequestParked) -> String {
    let id = &parked.request_id;
    let note = if parked.message.is_empty() {
        String::new()
    } else {
        format!("\n  {}", parked.message)
    };
    match parked.state.as_str() {
        "scheduled" => format!(
            "scheduled: request {id} runs at {} (window {}){note}",
            super::report::utc_timestamp(parked.run_at_unix_ms),
            parked.window
        ),
        "awaiting_approval" => format!("awaiting approval: request {id}{note}"),
        "starting" => format!("starting: request {id}"),
        state => format!("{state}: request {id}{note}"),
    }
}

/// Submits and follows; `Err` carries the exit code and the message when
/// there is no result to report.
pub async fn submit_and_follow(
    submission: Submission<'_>,
    on_update: impl FnMut(Update<'_>),
) -> Result<Ending, (ExitCode, String)> {
    let (mut client, reached, signing_context) = match submission.connected {
        Some(connecting) => {
            let ahead = connecting.await.map_err(|error| {
                (
                    ExitCode::DeploymentFailed,
                    format!("connecting to the controller failed: {error}"),
                )
            })??;
            (ahead.client, ahead.reached, ahead.signing_context)
        }
        None => {
            let (client, reached) =
                connect::controller_reached(submission.address, submission.tls).await?;
            (client, reached, None)
        }
    };
    // A deploy is signed by its requester (issue 19): the agent of an
    // environment with an [approvals] policy runs only signed changes.
    let (mut signatures, mut signed_request_id) = (Vec::new(), String::new());
    if matches!(submission.call, ControlCall::Deploy) {
        if let Some(signer) = super::signing::signer(submission.tls)? {
            signed_request_id = super::signing::new_request_id();
            signatures.push(
                super::signing::sign_deploy(
                    &mut client,
                    submission.address,
                    &signer,
                    super::signing::DeployStatement {
                        role: pgrollout_shared::signing::role::REQUESTER,
                        plan_id: &submission.plan.plan_id,
                        environment: submission.environment,
                        request_id: &signed_request_id,
                    },
                    signing_context,
                )
                .await?,
            );
        }
    }
    let mut request = tonic::Request::new(DeployRequest {
        signatures,
        signed_request_id,
        environment: submission.environment.to_owned(),
        plan: Some(submission.plan),
        traceparent: crate::telemetry::spans::current_traceparent(),
        agent_wait_ms: u64::try_from(submission.agent_wait.as_millis()).unwrap_or(u64::MAX),
        continue_on_error: submission.continue_on_error,
        ticket: submission.attachments.ticket.clone().unwrap_or_default(),
        runbook: submission.attachments.runbook.clone().unwrap_or_default(),
        rollback_plan: submission
            .attachments
            .rollback_plan
            .clone()
            .unwrap_or_default(),
        no_wait: submission.window.no_wait,
        follow: submission.window.follow,
        // Put back below, once the result has arrived.
        expands_existence_only: true,
        fleet_continue_on_error: submission.fleet.continue_on_error,
        fleet_rollback_on_failure: submission.fleet.rollback_on_failure,
    });
    if let Ok(actor) = operator_name().parse() {
        request.metadata_mut().insert(CLAIMED_ACTOR_HEADER, actor);
    }
    let response = match submission.call {
        ControlCall::Deploy => client.deploy(request).await,
        ControlCall::Smoke => client.smoke(request).await,
        ControlCall::Check => client.check(request).await,
        ControlCall::Perf => client.perf(request).await,
    };
    let stream = response
        .map_err(|status| connect::refusal(&status, submission.address))?
        .into_inner();
    let failover = Failover::new(submission.address, reached, submission.tls);
    follow_updates(stream, submission.window.follow, Some(failover), on_update).await
}

/// Reads a rollout's (or a request's) updates to the end. `following`: the
/// operator asked to stay until the rollout ran, so a stream that ends while
/// the request still waits lost the controller. With `failover` listing
/// other controllers, a stream that breaks before the result is picked up
/// on one of them (issue 18: `failover.rs`).
pub async fn follow_updates(
    mut stream: tonic::Streaming<RolloutUpdate>,
    following: bool,
    mut failover: Option<Failover<'_>>,
    mut on_update: impl FnMut(Update<'_>),
) -> Result<Ending, (ExitCode, String)> {
    let mut rollout: Option<RolloutStarted> = None;
    let mut parked: Option<RequestParked> = None;
    let mut fleet = None;
    // The last event printed: a stream picked up elsewhere starts after it.
    let mut last_seq = 0u64;
    let mut picked_up_elsewhere = false;
    loop {
        let next = match failover.as_ref().and_then(Failover::deadline) {
            Some(deadline) => tokio::time::timeout_at(deadline, stream.message()).await,
            None => Ok(stream.message().await),
        };
        let why = match next {
            Ok(Ok(Some(update))) => {
                match escaped(update, "pgrollout.v1.RolloutUpdate").body {
                    // The rollout picked up on another controller announces
                    // itself again: already shown.
                    Some(Body::Started(_)) if picked_up_elsewhere && rollout.is_some() => {}
                    Some(Body::Started(started)) => {
                        for gate in &started.gates {
                            let mark = if gate.passed {
                                mark(Mark::Ok)
                            } else {
                                mark(Mark::Fail)
                            };
                            println!("  gate {mark} {}: {}", gate.gate, gate.reason);
                        }
                        on_update(Update::Started(&started));
                        rollout = Some(started);
                    }
                    Some(Body::Event(event)) => {
                        last_seq = last_seq.max(event.seq);
                        on_update(Update::Event(&event))
                    }
                    Some(Body::Finished(mut result)) => {
                        // The compact existence-only reports, whole again
                        // (the request said this CLI expands them).
                        if let Err(why) = pgrollout_shared::smoke_compact::expand(&mut result) {
                            return Err((
                                ExitCode::DeploymentFailed,
                                format!("the controller's result is malformed: {why}"),
                            ));
                        }
                        return Ok(Ending::Finished(Box::new(Followed {
                            rollout,
                            result,
                            fleet,
                        })));
                    }
                    Some(Body::Fleet(report)) => fleet = Some(report),
                    // Followed on another controller: the rollout's job
                    // lost its controller; its agent's result corrects it.
                    Some(Body::InDoubt(doubt)) => {
                        eprintln!(
                            "pgrollout: rollout {} is unknown for now ({}); waiting for its agent's result",
                            doubt.rollout_id, doubt.message
                        );
                        if let Some(failover) = failover.as_mut() {
                            failover.start_clock();
                        }
                    }
                    Some(Body::Parked(request)) => {
                        on_update(Update::Parked(&request));
                        parked = Some(request);
                    }
                    None => {}
                }
                continue;
            }
            Ok(Ok(None)) => None,
            Ok(Err(status)) => Some(status.message().to_owned()),
            Err(_elapsed) => {
                let timeout = failover.as_ref().map(Failover::timeout).unwrap_or_default();
                eprintln!(
                    "pgrollout: no result was recorded within {} (--follow-timeout)",
                    humantime::format_duration(timeout)
                );
                break;
            }
        };
        let lost = match (&rollout, &parked) {
            // A fleet's targets are followed one by one by its driver.
            (Some(started), _) if started.fleet_targets == 0 => Some(Lost::Rollout {
                id: started.rollout_id.clone(),
                after_seq: last_seq,
            }),
            (None, Some(request)) if following && waits(&request.state) => Some(Lost::Request {
                id: request.request_id.clone(),
            }),
            _ => None,
        };
        let picked_up = match (lost, failover.as_mut().filter(|f| f.has_others())) {
            (Some(lost), Some(failover)) => {
                let why = why
                    .as_deref()
                    .unwrap_or("it ended the stream before the result");
                failover.reopen(&lost, why).await
            }
            _ => {
                if let Some(why) = why {
                    eprintln!("pgrollout: lost the controller mid-rollout: {why}");
                }
                None
            }
        };
        match picked_up {
            Some(again) => {
                stream = again;
                picked_up_elsewhere = true;
            }
            None => break,
        }
    }
    match (rollout, parked) {
        (None, Some(parked)) if !following || !waits(&parked.state) => Ok(Ending::Parked(parked)),
        (None, Some(parked)) => Err((
            ExitCode::DeploymentFailed,
            format!(
                "the controller stopped answering while request {id} was {}; it is still recorded — \
                 `pgrollout status {id} --follow` picks it up again",
                parked.state,
                id = parked.request_id
            ),
        )),
        (rollout, _) => {
            let which = rollout
                .as_ref()
                .map(|r| r.rollout_id.as_str())
                .unwrap_or("(unknown id)");
            Err((
                ExitCode::DeploymentFailed,
                format!(
                    "the rollout {which} ended without a result here; its state is unknown to this command — the \
                     agent keeps its result until the controller records it: see `pgrollout status {which}`"
                ),
            ))
        }
    }
}

/// Who the operator says they are: believed only by a `--dev-plaintext`
/// controller; with TLS the certificate says who the operator is.
pub(super) fn operator_name() -> String {
    std::env::var("PGROLLOUT_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .or_else(local_user_name)
        .or_else(|| {
            // Users from a directory service are not in /etc/passwd.
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// This process's user in /etc/passwd, found by its uid: what `id -un`
/// says for a local user, without starting a process on every command.
fn local_user_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()? == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    /// The name read from /etc/passwd is the one `id -un` prints.
    #[test]
    fn the_local_user_is_who_id_says() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("id runs");
        let expected = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        assert_eq!(super::local_user_name().as_deref(), Some(expected.as_str()));
    }
}
