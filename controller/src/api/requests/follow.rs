//! Following a request (`status p-… --follow`, `approve --follow`): its
//! state now, what happens to it next, and the rollout it becomes to the
//! result. A request that started before this controller did (a restart) is
//! followed through the store instead.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::Status;

use crate::api::follow_rollout::{finished, started};
use crate::api::status::store_failure;
use crate::api::UpdateStream;
use crate::engine::requests::{parked_update, request_state};
use crate::engine::Controller;

/// How often a rollout started before a restart is looked up again.
const STORE_POLL: Duration = Duration::from_secs(1);

pub async fn follow(controller: Arc<Controller>, request_id: &str) -> Result<UpdateStream, Status> {
    let store = &controller.store;
    let read = |id: String| {
        let controller = controller.clone();
        async move {
            let pending = controller
                .store
                .pending_rollout(&id)
                .await
                .map_err(store_failure("access its store"))?;
            let schedule = controller
                .store
                .request_schedule(&id)
                .await
                .map_err(store_failure("access its store"))?;
            Ok::<_, Status>(pending.zip(schedule))
        }
    };
    let Some((first, _)) = read(request_id.to_owned()).await? else {
        let hint = if store
            .rollout_status(request_id)
            .await
            .map_err(store_failure("access its store"))?
            .is_some()
        {
            format!("; {request_id} is a rollout — `pgrollout status {request_id}` shows it")
        } else {
            String::new()
        };
        return Err(Status::not_found(format!(
            "no request {request_id:?}{hint}"
        )));
    };
    let open = |state: &str| {
        matches!(
            state,
            request_state::AWAITING_APPROVAL
                | request_state::SCHEDULED
                | request_state::STARTING
                | request_state::APPROVED
                | request_state::STARTED
        )
    };
    if !open(&first.state) {
        let schedule = controller
            .store
            .request_schedule(request_id)
            .await
            .map_err(store_failure("access its store"))?;
        let note = schedule.map(|s| s.note).unwrap_or_default();
        let update = parked_update(request_id, &first.state, 0, "", &note);
        return Ok(Box::pin(tokio_stream::once(Ok(update))));
    }
    // Subscribed before the second look: whatever changes after it arrives.
    let updates = controller.followers.follow(request_id);
    let Some((pending, schedule)) = read(request_id.to_owned()).await? else {
        return Err(Status::not_found(format!("no request {request_id:?}")));
    };
    let live = UnboundedReceiverStream::new(updates).map(|update| update.map_err(Status::from));
    match (pending.state.as_str(), pending.rollout_id) {
        (request_state::APPROVED | request_state::STARTED, Some(rollout_id))
            if !controller.followers.has_history(request_id) =>
        {
            Ok(from_store(controller.clone(), rollout_id))
        }
        (request_state::APPROVED | request_state::STARTED, _) => Ok(Box::pin(live)),
        (state, _) => {
            let now = parked_update(
                request_id,
                state,
                schedule.run_at.unwrap_or_default(),
                &schedule.window,
                &schedule.note,
            );
            Ok(Box::pin(tokio_stream::once(Ok(now)).chain(live)))
        }
    }
}

/// The rollout as the store has it, until it is settled: started, then its
/// result.
fn from_store(controller: Arc<Controller>, rollout_id: String) -> UpdateStream {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now()
            + controller.config.deployment.job_timeout
            + Duration::from_secs(60);
        let mut announced = false;
        loop {
            let status = match controller.store.rollout_status(&rollout_id).await {
                Ok(Some(status)) => status,
                Ok(None) => return,
                Err(error) => {
                    let _ = sender.send(Err(store_failure("access its store")(error)));
                    return;
                }
            };
            if !announced {
                announced = true;
                if sender.send(Ok(started(&status))).is_err() {
                    return;
                }
            }
            if status.finished || tokio::time::Instant::now() > deadline {
                let _ = sender.send(Ok(finished(status)));
                return;
            }
            tokio::time::sleep(STORE_POLL).await;
        }
    });
    Box::pin(UnboundedReceiverStream::new(receiver))
}
