//! This controller's life in a shared store (issue 18, item 2): registered
//! before recovery (each job it offers names it: `rollout::claim_job_offered`),
//! kept alive by a heartbeat
//! whose every beat also settles the work of controllers that died (jobs,
//! requests being started, fleet rollouts driven)
//! (`identity.rs` holds what an identity is).

use std::sync::Arc;

use pgrollout_shared::job::now_unix_ms;

use super::identity::{id_for, Identity, HEARTBEAT};
use super::Controller;
use crate::store::Settle;

/// Registers this controller in the store, before recovery and before any
/// job is offered.
pub async fn register(controller: &Controller) -> Result<(), crate::store::StoreError> {
    let operators = controller.config.listen.operators;
    let id = id_for(operators);
    let epoch = controller
        .store
        .register_controller(&id, &operators.to_string(), now_unix_ms())
        .await?;
    tracing::info!(controller_id = %id, epoch, "controller registered in the store");
    let _ = controller.identity.set(Identity { id, epoch });
    Ok(())
}

/// Renews the heartbeat and settles the jobs of dead controllers, until
/// the process stops. Only on a shared store: an SQLite file has one
/// controller, whose start-up settles everything.
pub async fn keep_alive(controller: Arc<Controller>) {
    let Some(me) = controller.identity.get().cloned() else {
        return;
    };
    if !controller.store.shared_by_controllers() {
        return;
    }
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match controller
            .store
            .controller_heartbeat(&me.id, me.epoch, now_unix_ms())
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::error!(controller_id = %me.id, epoch = me.epoch,
                "another controller started under this controller's id: two processes share one listen address's identity"),
            Err(error) => {
                tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), "cannot renew this controller's heartbeat")
            }
        }
        sweep(&controller).await;
    }
}

/// What a dead controller left: its jobs in doubt, the requests it was
/// starting, the fleet rollouts it drove — each settled by one live
/// controller, once.
async fn sweep(controller: &Controller) {
    super::recovery::settle(controller, Settle::DeadOnly).await;
    super::requests::settle_interrupted_starts(controller, Settle::DeadOnly).await;
    super::fleet::after_restart(controller, Settle::DeadOnly).await;
}
