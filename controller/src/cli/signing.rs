//! What the operator's CLI signs (issue 19): a deploy's requester statement
//! and an approver's, and the requester's (an admin's, in an emergency) of a
//! rollback, disable, enable or adoption, with the key of the operator's own certificate — the
//! files it already uses for mTLS. The statement names where the change runs
//! as the controller reports it; an agent with an `[approvals]` policy checks
//! every field, so a controller that reports wrongly gets the job refused.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::{AdoptSpec, JobKind};
use pgrollout_shared::operations::{DisableSpec, RollbackScope, RollbackSpec};
use pgrollout_shared::proto::{
    control_client::ControlClient, AdoptRequest, GetRolloutRequest, RollbackRequest,
    RoutineRequest, SignedStatement, SigningContextRequest, SigningContextResponse,
};
use pgrollout_shared::signing::{action, fleet, role, subject, Signer, Statement};
use tonic::transport::Channel;

use super::connect::OperatorTls;
use super::operation::Call;
use crate::api::operations::{rollback_target, selector};

/// How long a signature stays good: long enough for a request to wait for
/// its approvals and its window, short enough that an old one is useless.
const VALIDITY_MS: i64 = 7 * 24 * 3_600_000;

type Refusal = (ExitCode, String);

/// The operator's signer, when the CLI has a key (none with
/// `--dev-plaintext`, where nothing is signed).
pub fn signer(tls: &OperatorTls) -> Result<Option<Signer>, Refusal> {
    let Some((cert, key)) = tls.cert_and_key() else {
        return Ok(None);
    };
    Signer::load(cert, key).map(Some).map_err(|error| {
        (
            ExitCode::ValidationFailed,
            format!("cannot sign with the operator key: {error}"),
        )
    })
}

/// A new request id, chosen here so that the requester's statement can name
/// it (the controller parks the request under it).
pub fn new_request_id() -> String {
    format!(
        "p-{:x}-{:08x}",
        pgrollout_shared::job::now_unix_ms(),
        fastrand::u32(..)
    )
}

/// What a deploy's statement binds: who signs as what, for which plan,
/// environment and request.
pub struct DeployStatement<'a> {
    pub role: &'a str,
    pub plan_id: &'a str,
    pub environment: &'a str,
    pub request_id: &'a str,
}

/// Signs `role`'s statement for a deploy of `plan_id` to `environment`,
/// asking the controller (at `address`, for messages) where that environment
/// runs — unless `asked_ahead` holds its answer already; its refusal (an
/// unknown environment, a revoked operator) is the command's, with the same
/// exit code and words as any other call's.
pub async fn sign_deploy(
    client: &mut ControlClient<Channel>,
    address: &str,
    signer: &Signer,
    deploy: DeployStatement<'_>,
    asked_ahead: Option<AskedContext>,
) -> Result<SignedStatement, Refusal> {
    let DeployStatement {
        role,
        plan_id,
        environment,
        request_id,
    } = deploy;
    let statement = Statement {
        action: action::DEPLOY.into(),
        role: role.into(),
        plan_id: plan_id.into(),
        environment: environment.into(),
        request_id: request_id.into(),
        expires_unix_ms: pgrollout_shared::job::now_unix_ms() + VALIDITY_MS,
        ..Statement::default()
    };
    sign_in_context(client, address, signer, statement, asked_ahead).await
}

/// The controller's answer to `SigningContext`, asked while the CLI was
/// still reading the project (`follow::connect_ahead`): kept as it came, so
/// a refusal is reported when the statement is signed, as if asked then.
pub type AskedContext = Result<SigningContextResponse, tonic::Status>;

/// Asks the controller where `environment` runs (zone and target), for a
/// statement to name.
pub async fn ask_context(client: &mut ControlClient<Channel>, environment: &str) -> AskedContext {
    ask_fleet_context(client, environment, "").await
}

/// [`ask_context`] for a fleet rollout (`f-…`, issue 24): its recorded
/// members, and its plan id.
async fn ask_fleet_context(
    client: &mut ControlClient<Channel>,
    environment: &str,
    fleet_rollout: &str,
) -> AskedContext {
    client
        .signing_context(SigningContextRequest {
            environment: environment.to_owned(),
            fleet_rollout: fleet_rollout.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Fills in the zone and target the controller reports for the statement's
/// environment (asked now, or ahead when `asked_ahead` holds the answer for
/// that environment), and signs.
async fn sign_in_context(
    client: &mut ControlClient<Channel>,
    address: &str,
    signer: &Signer,
    statement: Statement,
    asked_ahead: Option<AskedContext>,
) -> Result<SignedStatement, Refusal> {
    let asked = match asked_ahead {
        Some(asked) => asked,
        None => ask_context(client, &statement.environment).await,
    };
    let context = asked.map_err(|status| super::connect::refusal(&status, address))?;
    if context.environment != statement.environment {
        // Asked ahead for another environment than the one signed for: a
        // statement never names a zone it was not given for its environment.
        return Err((
            ExitCode::ValidationFailed,
            format!(
                "the controller described environment {:?} when asked for {:?}",
                context.environment, statement.environment
            ),
        ));
    }
    let (zone, target) = if context.fleet_members.is_empty() {
        (context.zone, context.target)
    } else {
        // A fleet (issue 19 with 24): the CLI hashes the members it was
        // given itself, and says which it signed for.
        eprintln!(
            "pgrollout: signing for the fleet of {} target(s): {}",
            context.fleet_members.len(),
            context.fleet_members.join(", ")
        );
        (
            fleet::ZONE.to_owned(),
            fleet::target_of(&context.fleet_members),
        )
    };
    let statement = Statement {
        zone,
        target,
        ..statement
    };
    signer
        .sign(&statement)
        .map_err(|error| (ExitCode::ValidationFailed, format!("cannot sign: {error}")))
}

/// How long an operation's statement stays good: it runs at once (never
/// parked), so an hour covers any `--agent-wait`.
const OPERATION_VALIDITY_MS: i64 = 3_600_000;

/// Signs a rollback, disable, enable or adoption (issue 19) when the CLI has
/// an operator key: the statement binds what the agent will do — the
/// subject is computed from the very spec the controller builds out of this
/// request (`api::operations` parses the names and `--to` the same way) —
/// with a new request id. An emergency rollback is signed as `admin`, with
/// its reason: the agent counts it only if its policy lists this operator
/// among its admins. Other calls pass through unchanged.
pub async fn sign_operation(
    client: &mut ControlClient<Channel>,
    address: &str,
    tls: &OperatorTls,
    call: Call,
) -> Result<Call, Refusal> {
    let Some(signer) = signer(tls)? else {
        return Ok(call);
    };
    let invalid = |status: tonic::Status| (ExitCode::ValidationFailed, status.message().to_owned());
    let (environment, kind, reason) = match &call {
        Call::Rollback(r) => {
            let scope = if r.rollout_id.is_empty() {
                RollbackScope::Routines(selector(&r.procedure).map_err(invalid)?)
            } else {
                RollbackScope::Rollout(r.rollout_id.clone())
            };
            let environment = if r.environment.is_empty() && !r.rollout_id.is_empty() {
                rollout_environment(client, address, &r.rollout_id).await?
            } else {
                r.environment.clone()
            };
            let reason = r.reason.trim().to_owned();
            let kind = JobKind::Rollback(RollbackSpec {
                scope,
                target: rollback_target(&r.to).map_err(invalid)?,
                emergency: r.emergency.then(|| reason.clone()),
                known_versions: Vec::new(),
            });
            (environment, kind, reason)
        }
        Call::Disable(r) => (
            r.environment.clone(),
            JobKind::Disable(DisableSpec {
                routines: selector(&r.procedure).map_err(invalid)?,
                revoke: r.revoke,
            }),
            String::new(),
        ),
        Call::Enable(r) => (
            r.environment.clone(),
            JobKind::Enable(selector(&r.procedure).map_err(invalid)?),
            String::new(),
        ),
        Call::Adopt(r) => {
            let routines = r
                .procedures
                .iter()
                .map(|p| selector(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            let reason = r.reason.trim().to_owned();
            let kind = JobKind::Adopt(AdoptSpec {
                routines,
                reason: reason.clone(),
                only_drifted: r.only_drifted,
            });
            (r.environment.clone(), kind, reason)
        }
        Call::Resume(r) => return sign_resume(client, address, &signer, r.clone()).await,
        Call::History(_) | Call::Retry(_) => return Ok(call),
    };
    let Some((action, subject)) = subject::of_operation(&kind) else {
        return Ok(call);
    };
    let role = if action == action::EMERGENCY_ROLLBACK {
        role::ADMIN
    } else {
        role::REQUESTER
    };
    let request_id = new_request_id();
    let statement = Statement {
        action: action.into(),
        role: role.into(),
        plan_id: subject,
        environment: environment.clone(),
        request_id: request_id.clone(),
        reason,
        expires_unix_ms: pgrollout_shared::job::now_unix_ms() + OPERATION_VALIDITY_MS,
        ..Statement::default()
    };
    // `rollback --rollout f-…` signs the fleet rollout's recorded members.
    let fleet_rollout = match &call {
        Call::Rollback(r) if r.rollout_id.starts_with("f-") => r.rollout_id.clone(),
        _ => String::new(),
    };
    let asked = ask_fleet_context(client, &environment, &fleet_rollout).await;
    let signed = sign_in_context(client, address, &signer, statement, Some(asked)).await?;
    eprintln!("pgrollout: signed: {action} in {environment} as {role}, request {request_id}");
    let signatures = vec![signed];
    Ok(match call {
        Call::Rollback(r) => Call::Rollback(RollbackRequest {
            signatures,
            signed_request_id: request_id,
            ..r
        }),
        Call::Disable(r) => Call::Disable(RoutineRequest {
            signatures,
            signed_request_id: request_id,
            ..r
        }),
        Call::Enable(r) => Call::Enable(RoutineRequest {
            signatures,
            signed_request_id: request_id,
            ..r
        }),
        Call::Adopt(r) => Call::Adopt(AdoptRequest {
            signatures,
            signed_request_id: request_id,
            ..r
        }),
        other => other,
    })
}

/// `pgrollout resume f-…` (issue 19 with 24): the operator who resumes a
/// halted fleet rollout signs it — the fleet rollout and its plan, for its
/// recorded members, with a new request id. An agent where the fleet's deploy
/// failed runs it again only with this statement.
async fn sign_resume(
    client: &mut ControlClient<Channel>,
    address: &str,
    signer: &Signer,
    request: pgrollout_shared::proto::ResumeFleetRequest,
) -> Result<Call, Refusal> {
    let environment = rollout_environment(client, address, &request.fleet_id).await?;
    let context = ask_fleet_context(client, &environment, &request.fleet_id)
        .await
        .map_err(|status| super::connect::refusal(&status, address))?;
    let request_id = new_request_id();
    let statement = Statement {
        action: action::RESUME.into(),
        role: role::REQUESTER.into(),
        plan_id: fleet::resume_subject(&request.fleet_id, &context.plan_id),
        environment: environment.clone(),
        request_id: request_id.clone(),
        expires_unix_ms: pgrollout_shared::job::now_unix_ms() + OPERATION_VALIDITY_MS,
        ..Statement::default()
    };
    let signed = sign_in_context(client, address, signer, statement, Some(Ok(context))).await?;
    eprintln!(
        "pgrollout: signed: resume of {} in {environment}, request {request_id}",
        request.fleet_id
    );
    Ok(Call::Resume(pgrollout_shared::proto::ResumeFleetRequest {
        signatures: vec![signed],
        signed_request_id: request_id,
        ..request
    }))
}

/// The environment a rollout ran in (`rollback --rollout` names none).
async fn rollout_environment(
    client: &mut ControlClient<Channel>,
    address: &str,
    rollout_id: &str,
) -> Result<String, Refusal> {
    Ok(client
        .get_rollout(GetRolloutRequest {
            rollout_id: rollout_id.to_owned(),
        })
        .await
        .map_err(|status| super::connect::refusal(&status, address))?
        .into_inner()
        .environment)
}
