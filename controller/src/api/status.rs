//! The one place an engine error becomes the gRPC status an operator's CLI
//! reads (and so its exit code: `cli/connect.rs::exit_code_of`), and where
//! a store failure is logged — once, with its whole chain.

use std::pin::Pin;

use futures_util::Stream;
use pgrollout_shared::errors::error_chain;
use pgrollout_shared::exit_code::AWAITING_APPROVAL_METADATA;
use pgrollout_shared::proto::{rollout_update, RolloutUpdate};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use crate::engine::error::EngineError;
use crate::store::StoreError;

/// What every streaming call of the `Control` service answers with.
pub(crate) type UpdateStream = Pin<Box<dyn Stream<Item = Result<RolloutUpdate, Status>> + Send>>;

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Invalid(message) => Status::invalid_argument(message),
            EngineError::NotFound(message) => Status::not_found(message),
            EngineError::Refused(message) => Status::failed_precondition(message),
            EngineError::AlreadyExists(message) => Status::already_exists(message),
            EngineError::Forbidden(message) => Status::permission_denied(message),
            EngineError::Unavailable(message) => Status::unavailable(message),
            EngineError::AwaitingApproval {
                request_id,
                message,
            } => {
                // Marked so the CLI exits with "awaiting approval" (5).
                let mut metadata = tonic::metadata::MetadataMap::new();
                if let Ok(value) = request_id.parse() {
                    metadata.insert(AWAITING_APPROVAL_METADATA, value);
                }
                Status::with_metadata(Code::FailedPrecondition, message, metadata)
            }
            EngineError::Store { doing, source } => store_status(doing, &source),
            EngineError::Internal(message) => Status::internal(message),
        }
    }
}

/// `map_err(store_failure("read its store"))` in a service method.
pub(crate) fn store_failure(doing: &'static str) -> impl Fn(StoreError) -> Status + Copy {
    move |source| store_status(doing, &source)
}

/// The details go to the log; the operator reads what failed and, for a
/// corrupt store, which row (never data: a row is named by its id).
fn store_status(doing: &str, source: &StoreError) -> Status {
    let chain = error_chain(source);
    tracing::error!(error = %chain, "the controller could not {doing}");
    match source {
        StoreError::Corrupt(_) => Status::internal(format!(
            "the controller could not {doing}: {chain}; see its log"
        )),
        _ => Status::internal(format!("the controller could not {doing}; see its log")),
    }
}

/// A rollout's updates as the response stream of a call.
pub(crate) fn update_stream(updates: crate::engine::updates::Updates) -> UpdateStream {
    Box::pin(ReceiverStream::new(updates).map(|update| update.map_err(Status::from)))
}

/// `stream` with each result's passed existence-only smoke reports in
/// their compact form, for a requester that expands them itself
/// (`DeployRequest.expands_existence_only`): on a batch of a thousand
/// routines most of the result, encoded, sent, decoded and escaped for
/// nothing (issue 15 item 9).
pub(crate) fn compact_results(stream: UpdateStream) -> UpdateStream {
    Box::pin(stream.map(|update| {
        update.map(|mut update| {
            if let Some(rollout_update::Body::Finished(result)) = &mut update.body {
                pgrollout_shared::smoke_compact::compact(result);
            }
            update
        })
    }))
}

/// A request's updates (parked, then its rollout's) as a response stream.
pub(crate) fn request_stream(updates: crate::engine::requests::RequestUpdates) -> UpdateStream {
    Box::pin(updates.map(|update| update.map_err(Status::from)))
}
