//! Where a gated deploy request starts (issue 24): over a fleet when its
//! environment is one, else as the one-target rollout. Kept apart from
//! `rollout.rs` so the one-target path never depends on fleets.

use std::sync::Arc;

use pgrollout_shared::job::JobKind;

use super::error::EngineError;
use super::rollout::{self, RolloutRequest};
use super::updates::Updates;
use super::Controller;

pub async fn start(
    controller: Arc<Controller>,
    request: RolloutRequest,
) -> Result<Updates, EngineError> {
    let fleet = controller
        .config
        .environments
        .get(&request.environment)
        .is_some_and(|e| e.is_fleet());
    if fleet && matches!(request.kind, JobKind::Deploy { .. }) {
        return super::fleet::start(controller, request).await;
    }
    rollout::start(controller, request).await
}
