//! Submitting a plan to the controller and following the rollout to its
//! result: shared by `deploy`, `smoke` and `batch`, which differ only in what
//! they print along the way.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    rollout_update::Body, DeployRequest, JobEvent, JobResult, Plan, RolloutStarted,
};

use super::connect::{self, OperatorTls};
use crate::auth::CLAIMED_ACTOR_HEADER;

/// What to run, where.
pub struct Submission<'a> {
    pub address: &'a str,
    pub tls: &'a OperatorTls,
    pub environment: &'a str,
    pub plan: Plan,
    pub smoke_only: bool,
    pub continue_on_error: bool,
    pub agent_wait: std::time::Duration,
    pub attachments: &'a GateAttachments,
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
}

/// A rollout that produced its result.
pub struct Followed {
    pub rollout: Option<RolloutStarted>,
    pub result: JobResult,
}

/// Submits and follows; `Err` carries the exit code and the message when
/// there is no result to report.
pub async fn submit_and_follow(
    submission: Submission<'_>,
    mut on_update: impl FnMut(Update<'_>),
) -> Result<Followed, (ExitCode, String)> {
    let mut client = connect::controller(submission.address, submission.tls).await?;
    let mut request = tonic::Request::new(DeployRequest {
        environment: submission.environment.to_owned(),
        plan: Some(submission.plan),
        traceparent: crate::telemetry::spans::current_traceparent().to_string(),
        agent_wait_ms: u64::try_from(submission.agent_wait.as_millis()).unwrap_or(u64::MAX),
        continue_on_error: submission.continue_on_error,
        ticket: submission.attachments.ticket.clone().unwrap_or_default(),
        runbook: submission.attachments.runbook.clone().unwrap_or_default(),
        rollback_plan: submission
            .attachments
            .rollback_plan
            .clone()
            .unwrap_or_default(),
    });
    if let Ok(actor) = operator_name().parse() {
        request.metadata_mut().insert(CLAIMED_ACTOR_HEADER, actor);
    }
    let response = if submission.smoke_only {
        client.smoke(request).await
    } else {
        client.deploy(request).await
    };
    let mut stream = response
        .map_err(|status| connect::refusal(&status, submission.address))?
        .into_inner();
    let mut rollout: Option<RolloutStarted> = None;
    loop {
        match stream.message().await {
            Ok(Some(update)) => match update.body {
                Some(Body::Started(started)) => {
                    for gate in &started.gates {
                        let mark = if gate.passed { "✅" } else { "❌" };
                        println!("  gate {mark} {}: {}", gate.gate, gate.reason);
                    }
                    on_update(Update::Started(&started));
                    rollout = Some(started);
                }
                Some(Body::Event(event)) => on_update(Update::Event(&event)),
                Some(Body::Finished(result)) => return Ok(Followed { rollout, result }),
                None => {}
            },
            Ok(None) => break,
            Err(status) => {
                eprintln!(
                    "pgrollout: lost the controller mid-rollout: {}",
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
        format!("the rollout {which} ended without a result; its state is unknown — check the controller's log"),
    ))
}

/// Who the operator says they are: believed only by a `--dev-plaintext`
/// controller; with TLS the certificate says who the operator is.
pub(super) fn operator_name() -> String {
    std::env::var("PGROLLOUT_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
