//! This controller among the controllers sharing a PostgreSQL store (issue
//! 18, item 2): its row (id, address, epoch), kept alive by a heartbeat, and
//! the sweep that settles the jobs of controllers whose heartbeat expired.
//!
//! The id is the host's name and the operators' listen address: stable
//! across restarts of one controller (a restart is a new epoch under the
//! same id, and its start-up takes its previous life's jobs), distinct
//! between controllers, which cannot share a host's listen address.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;

use super::Controller;
use crate::store::Settle;

/// How often a controller renews its heartbeat (and sweeps).
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A controller whose heartbeat is older than this is dead: its jobs are
/// settled by the others. Several heartbeats, so one slow store round trip
/// does not kill a live controller; the controllers' clocks must agree to
/// well within it.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub epoch: i64,
}

/// `host/operators-address`.
pub fn id_for(operators: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/{operators}")
}

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

/// Records that this controller offered (and follows) a job's attempt. A
/// failure leaves the job unclaimed: only a start-up with no other live
/// controller settles it, so it is logged, never fatal to the offer.
pub async fn claim(controller: &Controller, job_id: &str, attempt: u32) {
    let Some(me) = controller.identity.get() else {
        return;
    };
    if let Err(error) = controller
        .store
        .record_job_controller(job_id, attempt, &me.id)
        .await
    {
        tracing::warn!(job_id, error = %pgrollout_shared::errors::error_chain(&error), "cannot record this controller as the job's");
    }
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
        super::recovery::settle(&controller, Settle::DeadOnly).await;
    }
}

/// `DEAD_AFTER` in the store's milliseconds.
pub fn dead_after_ms() -> i64 {
    i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(i64::MAX)
}
