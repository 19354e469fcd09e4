//! Following a rollout (`r-…`) from the store (issue 18): what a CLI that
//! lost the controller it asked reconnects to, and `pgrollout status r-…
//! --follow`. On a store shared by several controllers every event and
//! result is recorded by whichever controller the agent's stream reaches,
//! so any controller can tell the rollout's story from the store: its
//! events after the ones the caller saw, then its result.
//!
//! A rollout settled `unknown` (its job's controller died while the job was
//! out) is not an end here: the agent's journal reaches another controller,
//! whose record of the result corrects the rollout (`Store::finish_job`),
//! and that result is what the follower is told. Only the caller decides
//! how long to wait for it.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::proto::{
    rollout_update, JobResult, Outcome, RolloutInDoubt, RolloutStarted, RolloutStatus,
    RolloutUpdate,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use crate::api::status::store_failure;
use crate::api::UpdateStream;
use crate::engine::Controller;
use crate::store::state;

/// How often the store is read again: a step's line reaches the operator
/// this late at most after it was recorded.
const POLL: Duration = Duration::from_millis(250);

/// Starts following `rollout_id` after event `after_seq`; refuses an id
/// the store does not know as a rollout.
pub async fn follow(
    controller: Arc<Controller>,
    rollout_id: &str,
    after_seq: u64,
) -> Result<UpdateStream, Status> {
    if super::fleet::is_fleet_id(rollout_id) {
        return Err(Status::invalid_argument(format!(
            "{rollout_id} is a fleet rollout: `pgrollout status {rollout_id}` shows each target, and each \
             target's rollout (r-…) can be followed"
        )));
    }
    let Some(first) = controller
        .store
        .rollout_status(rollout_id)
        .await
        .map_err(store_failure("read its store"))?
    else {
        return Err(Status::not_found(format!(
            "no rollout {rollout_id:?}; a request (p-…) is followed with `pgrollout status <p-…> --follow`, \
             and `pgrollout rollouts` lists recent rollouts"
        )));
    };
    let (sender, receiver) = mpsc::unbounded_channel();
    let _ = sender.send(Ok(started(&first)));
    tokio::spawn(relay(controller, first, after_seq, sender));
    Ok(Box::pin(UnboundedReceiverStream::new(receiver)))
}

/// Sends the rollout's new events, then its result, reading the store every
/// `POLL`; stops when the caller goes away.
async fn relay(
    controller: Arc<Controller>,
    mut status: RolloutStatus,
    mut last_seq: u64,
    updates: mpsc::UnboundedSender<Result<RolloutUpdate, Status>>,
) {
    let id = status.rollout_id.clone();
    let mut doubt_told = false;
    loop {
        // The events first, the rollout's state after them: an event
        // recorded before the result is always sent before it.
        if let Err(status) = send_events(&controller, &id, &mut last_seq, &updates).await {
            let _ = updates.send(Err(status));
            return;
        }
        if settled(&status) {
            let _ = updates.send(Ok(finished(status)));
            return;
        }
        // Told once: the caller keeps waiting, and knows why.
        if status.state == state::UNKNOWN && !doubt_told {
            doubt_told = true;
            let update = RolloutUpdate {
                body: Some(rollout_update::Body::InDoubt(RolloutInDoubt {
                    rollout_id: id.clone(),
                    message: status.message.clone(),
                })),
            };
            if updates.send(Ok(update)).is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = updates.closed() => return,
        }
        status = match controller.store.rollout_status(&id).await {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = updates.send(Err(Status::not_found(format!(
                    "rollout {id} is no longer in the store"
                ))));
                return;
            }
            // A store restarting: read again at the next tick.
            Err(error) => {
                tracing::warn!(rollout_id = %id, error = %pgrollout_shared::errors::error_chain(&error), "cannot read the followed rollout; reading again");
                continue;
            }
        };
    }
}

/// The events of the rollout's latest job after `last_seq`, sent in order.
async fn send_events(
    controller: &Controller,
    rollout_id: &str,
    last_seq: &mut u64,
    updates: &mpsc::UnboundedSender<Result<RolloutUpdate, Status>>,
) -> Result<(), Status> {
    let job = match controller.store.latest_job(rollout_id).await {
        Ok(Some(job)) => job,
        Ok(None) => return Ok(()),
        Err(error) => return Err(store_failure("read its store")(error)),
    };
    let progress = match controller
        .store
        .job_progress(&job.job_id, job.attempt, *last_seq)
        .await
    {
        Ok(progress) => progress,
        Err(error) => {
            tracing::warn!(rollout_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot read the followed job's events; reading again");
            return Ok(());
        }
    };
    for event in progress.events {
        *last_seq = event.seq;
        let update = RolloutUpdate {
            body: Some(rollout_update::Body::Event(event)),
        };
        if updates.send(Ok(update)).is_err() {
            break;
        }
    }
    Ok(())
}

/// Whether the rollout has ended for good: finished, and not `unknown` —
/// a rollout in doubt still takes the result its agent reports late.
fn settled(status: &RolloutStatus) -> bool {
    status.finished && status.state != state::UNKNOWN && status.state != state::RUNNING
}

pub(super) fn started(status: &RolloutStatus) -> RolloutUpdate {
    RolloutUpdate {
        body: Some(rollout_update::Body::Started(RolloutStarted {
            rollout_id: status.rollout_id.clone(),
            environment: status.environment.clone(),
            zone: status.zone.clone(),
            agent_name: status.agent_name.clone(),
            trace_id: status.trace_id.clone(),
            actor: status.actor.clone(),
            started_at_unix_ms: status.created_at_unix_ms,
            gates: status.gates.clone(),
            ..Default::default()
        })),
    }
}

/// The recorded result, or — a rollout that ended without one (declined,
/// never accepted, pruned) — one made of its exit code and message; a
/// rollout not finished (a follower that gave up waiting) is a failure
/// whose message says its state, never a success.
pub(super) fn finished(status: RolloutStatus) -> RolloutUpdate {
    let outcome = if status.finished {
        outcome_of(status.exit_code)
    } else {
        Outcome::DeployFailed
    };
    let result = status.result.clone().unwrap_or_else(|| JobResult {
        outcome: outcome as i32,
        message: if status.message.is_empty() {
            format!("rollout {} is {}", status.rollout_id, status.state)
        } else {
            status.message.clone()
        },
        ..Default::default()
    });
    RolloutUpdate {
        body: Some(rollout_update::Body::Finished(result)),
    }
}

/// The outcome an exit code stands for (`ExitCode::from_outcome` reversed).
fn outcome_of(exit_code: i32) -> Outcome {
    match exit_code {
        0 => Outcome::Succeeded,
        1 => Outcome::ValidationFailed,
        3 => Outcome::SmokeFailed,
        _ => Outcome::DeployFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, exit_code: Option<i32>) -> RolloutStatus {
        RolloutStatus {
            rollout_id: "r-1".into(),
            state: state.into(),
            finished: exit_code.is_some(),
            exit_code: exit_code.unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_in_doubt_is_followed_until_its_result_is_recorded() {
        assert!(!settled(&status("running", None)));
        assert!(!settled(&status("unknown", Some(2))));
        assert!(settled(&status("succeeded", Some(0))));
        assert!(settled(&status("failed", Some(3))));
        assert!(settled(&status("rolled_back", Some(0))));
    }

    #[test]
    fn a_rollout_without_a_stored_result_ends_with_its_exit_code() {
        for (code, outcome) in [
            (0, Outcome::Succeeded),
            (1, Outcome::ValidationFailed),
            (2, Outcome::DeployFailed),
            (3, Outcome::SmokeFailed),
        ] {
            let Some(rollout_update::Body::Finished(result)) =
                finished(status("failed", Some(code))).body
            else {
                panic!("no result");
            };
            assert_eq!(result.outcome, outcome as i32);
            assert_eq!(result.message, "rollout r-1 is failed");
        }
    }

    #[test]
    fn a_follower_that_gives_up_on_a_running_rollout_never_reports_success() {
        let Some(rollout_update::Body::Finished(result)) = finished(status("running", None)).body
        else {
            panic!("no result");
        };
        assert_eq!(result.outcome, Outcome::DeployFailed as i32);
        assert_eq!(result.message, "rollout r-1 is running");
    }
}
