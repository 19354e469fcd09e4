//! The CLI's connection to the controller, and what a refusal means for the
//! exit code.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint};

use crate::api::MAX_MESSAGE_BYTES;

pub async fn controller(address: &str) -> Result<ControlClient<Channel>, (ExitCode, String)> {
    let endpoint = Endpoint::from_shared(address.to_owned()).map_err(|e| {
        (
            ExitCode::ValidationFailed,
            format!("invalid controller address {address:?}: {e}"),
        )
    })?;
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            (
                ExitCode::DeploymentFailed,
                format!(
                    "cannot reach the controller at {address}: {}; is `pgrollout serve` running there? (set --controller or PGROLLOUT_ADDR)",
                    error_chain(&e)
                ),
            )
        })?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// A refusal before anything changed is a validation failure (exit 1); an
/// unreachable agent or controller is a deployment failure (exit 2).
pub fn exit_code_of(status: &tonic::Status) -> ExitCode {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::AlreadyExists
        | Code::OutOfRange => ExitCode::ValidationFailed,
        _ => ExitCode::DeploymentFailed,
    }
}

pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
