//! This controller among the controllers sharing a PostgreSQL store (issue
//! 18, item 2): its row (id, address, epoch) and how long a heartbeat lasts.
//! Registering, the heartbeat and the sweep that settles the jobs of dead
//! controllers live in `liveness.rs`: this file stays a leaf, since
//! `Controller` holds an `Identity`.
//!
//! The id is the host's name and the operators' listen address: stable
//! across restarts of one controller (a restart is a new epoch under the
//! same id, and its start-up takes its previous life's jobs), distinct
//! between controllers, which cannot share a host's listen address.

use std::time::Duration;

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

/// `DEAD_AFTER` in the store's milliseconds.
pub fn dead_after_ms() -> i64 {
    i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(i64::MAX)
}
