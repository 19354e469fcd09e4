//! What the operator's CLI signs (issue 19): a deploy's requester statement
//! and an approver's, with the key of the operator's own certificate — the
//! files it already uses for mTLS. The statement names where the change runs
//! as the controller reports it; an agent with an `[approvals]` policy checks
//! every field, so a controller that reports wrongly gets the job refused.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    control_client::ControlClient, SignedStatement, SigningContextRequest,
};
use pgrollout_shared::signing::{action, Signer, Statement};
use tonic::transport::Channel;

use super::connect::OperatorTls;

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

/// Signs `role`'s statement for a deploy of `plan_id` to `environment`,
/// asking the controller (at `address`, for messages) where that environment
/// runs; its refusal (an unknown environment, a revoked operator) is the
/// command's, with the same exit code and words as any other call's.
pub async fn sign_deploy(
    client: &mut ControlClient<Channel>,
    address: &str,
    signer: &Signer,
    role: &str,
    plan_id: &str,
    environment: &str,
    request_id: &str,
) -> Result<SignedStatement, Refusal> {
    let context = client
        .signing_context(SigningContextRequest {
            environment: environment.to_owned(),
        })
        .await
        .map_err(|status| super::connect::refusal(&status, address))?
        .into_inner();
    let statement = Statement {
        action: action::DEPLOY.into(),
        role: role.into(),
        plan_id: plan_id.into(),
        environment: environment.into(),
        zone: context.zone,
        target: context.target,
        request_id: request_id.into(),
        reason: String::new(),
        expires_unix_ms: pgrollout_shared::job::now_unix_ms() + VALIDITY_MS,
    };
    signer
        .sign(&statement)
        .map_err(|error| (ExitCode::ValidationFailed, format!("cannot sign: {error}")))
}
