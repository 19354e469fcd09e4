//! `pgrollout approve <request> [--as stakeholder]` and `pgrollout reject
//! <request> --reason TEXT`: decide on a deploy request waiting for approval.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::ApproveRequest;

use super::connect::{self, OperatorTls};
use super::output::{self, OutputFlag};

#[derive(clap::Args)]
pub struct ApproveArgs {
    /// The request id the deploy printed (`p-…`).
    request: String,
    /// Decide as `approver` (default) or `stakeholder` (the sign-off gate).
    #[arg(long = "as", default_value = "approver")]
    role: String,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "")]
    reason: String,
    /// When this approval starts the rollout (or schedules it for its
    /// window), follow it to its result and exit with its code.
    #[arg(long, conflicts_with = "output")]
    follow: bool,
    #[command(flatten)]
    output: OutputFlag,
}

#[derive(clap::Args)]
pub struct RejectArgs {
    /// The request id the deploy printed (`p-…`).
    request: String,
    /// Why the request is rejected (required).
    #[arg(long)]
    reason: String,
}

pub async fn approve(address: &str, tls: &OperatorTls, args: ApproveArgs) -> ExitCode {
    let request_id = args.request.clone();
    // An approver's approval is signed (issue 19); a stakeholder's sign-off
    // is the controller's gate and is not.
    let signature = if args.role == "approver" {
        match sign(address, tls, &request_id).await {
            Ok(signature) => signature,
            Err((code, message)) => {
                eprintln!("pgrollout: {message}");
                return code;
            }
        }
    } else {
        None
    };
    let (code, state) = decide(
        address,
        tls,
        ApproveRequest {
            request_id: args.request,
            reject: false,
            reason: args.reason,
            role: args.role,
            signature,
        },
        args.output,
    )
    .await;
    match state.as_deref() {
        Some("approved" | "scheduled") if args.follow => {
            super::request::follow_request(address, tls, &request_id).await
        }
        Some("awaiting_approval") if args.follow => {
            println!("nothing to follow yet: request {request_id} still waits for approvals");
            code
        }
        _ => code,
    }
}

pub async fn reject(address: &str, tls: &OperatorTls, args: RejectArgs) -> ExitCode {
    decide(
        address,
        tls,
        ApproveRequest {
            request_id: args.request,
            reject: true,
            reason: args.reason,
            role: "approver".into(),
            signature: None,
        },
        OutputFlag::default(),
    )
    .await
    .0
}

/// The approver's statement for the request as the controller describes it
/// (plan, environment, zone, target); the agent checks each against the job.
async fn sign(
    address: &str,
    tls: &OperatorTls,
    request_id: &str,
) -> Result<Option<pgrollout_shared::proto::SignedStatement>, (ExitCode, String)> {
    let Some(signer) = super::signing::signer(tls)? else {
        return Ok(None);
    };
    let mut client = connect::controller(address, tls).await?;
    let status = client
        .get_rollout(pgrollout_shared::proto::GetRolloutRequest {
            rollout_id: request_id.to_owned(),
        })
        .await
        .map_err(|status| connect::refusal(&status, address))?
        .into_inner();
    let signed = super::signing::sign_deploy(
        &mut client,
        address,
        &signer,
        super::signing::DeployStatement {
            role: pgrollout_shared::signing::role::APPROVER,
            plan_id: &status.plan_id,
            environment: &status.environment,
            request_id,
        },
        None,
    )
    .await?;
    eprintln!(
        "signed: plan {} for {} ({} routine(s), commit {}), request {request_id}",
        status.plan_id, status.environment, status.routine_count, status.commit_sha
    );
    Ok(Some(signed))
}

/// The exit code, and the request's state after the decision.
async fn decide(
    address: &str,
    tls: &OperatorTls,
    request: ApproveRequest,
    output: OutputFlag,
) -> (ExitCode, Option<String>) {
    let request_id = request.request_id.clone();
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return (code, None);
        }
    };
    match client.approve(request).await {
        Ok(response) => {
            let response = pgrollout_shared::text::escaped(
                response.into_inner(),
                "pgrollout.v1.ApproveResponse",
            );
            if output.json() {
                output::print(&serde_json::json!({
                    "request": request_id,
                    "state": response.state,
                    "message": response.message,
                    "rollout": (!response.rollout_id.is_empty()).then_some(&response.rollout_id),
                    "trace_id": (!response.trace_id.is_empty()).then_some(&response.trace_id),
                }));
                return (ExitCode::Success, Some(response.state));
            }
            println!("{}", response.message);
            if !response.rollout_id.is_empty() {
                println!("Rollout: {}", response.rollout_id);
                println!("Trace ID: {}", response.trace_id);
            }
            (ExitCode::Success, Some(response.state))
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            eprintln!("pgrollout: {message}");
            (code, None)
        }
    }
}
