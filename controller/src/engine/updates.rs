//! What a rollout's followers receive: its updates, from its start to its
//! result. A leaf, so the rollout, the followers of parked requests and the
//! operations share the type without depending on each other.

use pgrollout_shared::proto::RolloutUpdate;
use tokio::sync::mpsc;

use super::error::EngineError;

/// One update of a rollout. The engine sends only `Ok`s; the error side
/// lets a reader of the store end a stream with what went wrong.
pub type Update = Result<RolloutUpdate, EngineError>;
pub type UpdateSender = mpsc::Sender<Update>;
/// A rollout's updates, from its start to its result.
pub type Updates = mpsc::Receiver<Update>;
