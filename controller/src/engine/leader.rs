//! Leader election for singleton work (issue 18, item 2): one task per
//! controller takes and renews a lease per singleton in the store
//! (`store/leases.rs`: compare-and-set, a fencing token that grows with
//! every change of holder) and publishes which it holds. The scheduler,
//! the watches' resumption, the drift schedule and retention run only while
//! this controller holds their lease ([`Leader::run_while_leading`], or the
//! scheduler's own loop) and stop within the lease time once it is lost;
//! their writes carry the lease's [`Fence`], so an ex-leader that does not
//! know it lost (paused, cut off from the store) still cannot write.
//!
//! Timing: a lease lasts `LEASE` from the moment its renewal was *sent*;
//! this controller counts it as held only until `LEASE - 2 × RENEW` after
//! that, and a renewal waits at most `RENEW / 2`, so it stops acting before
//! another controller may take over, with seconds of margin for the
//! controllers' clocks and a late tick. On SQLite (one
//! controller) the lease is taken and kept the same way, trivially.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;
use tokio::sync::watch;
use tokio::time::Instant;

use super::identity::{DEAD_AFTER, HEARTBEAT};
pub use super::leadership::{fenced_writes_refused, is_fence_lost, leader_gauge, Leader};
use super::leadership::{Held, LostFences};
use super::Controller;
use crate::store::leases::{singleton, Fence};
use crate::store::AuditEntry;

/// How long a lease lasts without renewal: as long as a controller's
/// heartbeat (a controller dead for its jobs is dead for its leases).
pub const LEASE: Duration = DEAD_AFTER;
/// How often the leases are renewed (and taken over, once expired).
pub const RENEW: Duration = HEARTBEAT;

impl Leader {
    /// Starts the lease task. Before the first renewal nothing is held.
    /// The handle is also kept on the controller, where the singletons'
    /// writes find their fence ([`Controller::lease_fence`]).
    pub fn start(controller: Arc<Controller>) -> Leader {
        let (sender, held) = watch::channel(Held::new());
        for name in singleton::ALL {
            leader_gauge()
                .get_or_create(&vec![("singleton", name.to_owned())])
                .set(0);
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(LostFences {
            fences: Mutex::new(Vec::new()),
            sender,
        });
        tokio::spawn(keep_leases(
            controller.clone(),
            lost.clone(),
            stopping.clone(),
        ));
        let leader = Leader {
            held,
            stopping,
            lost,
        };
        let _ = controller.leader.set(leader.clone());
        leader
    }
}

impl Controller {
    /// The fence of singleton `name`'s lease while this controller holds it
    /// (what its writes carry); `None` when it does not, or no lease task
    /// runs (unit tests).
    pub fn lease_fence(&self, name: &str) -> Option<Fence> {
        self.leader.get().and_then(|leader| leader.fence(name))
    }

    /// A singleton's write was refused for `fence` ([`Leader::fence_lost`]).
    pub fn fence_lost(&self, fence: &Fence) {
        match self.leader.get() {
            Some(leader) => leader.fence_lost(fence),
            None => {
                tracing::warn!(singleton = %fence.name, "lost the lease: the store refused this controller's write")
            }
        }
    }
}

/// Samples every live watch while this controller leads the watches
/// (`watch::lead`), and stops this controller's watch tasks when aborted
/// (the lease lost): the sampling then runs on the new leader.
pub async fn lead_watches(controller: Arc<Controller>) {
    let Some(fence) = controller.lease_fence(singleton::WATCHES) else {
        return;
    };
    struct StopOnDrop(Arc<Controller>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.watches.stop_all();
        }
    }
    let _stop = StopOnDrop(controller.clone());
    super::watch::lead(controller, fence).await;
}

/// At a clean stop: gives up the leases held, so another controller takes
/// them over at once rather than after `LEASE`.
pub async fn release(controller: &Controller, leader: &Leader) {
    leader.stopping.store(true, Ordering::SeqCst);
    for name in singleton::ALL {
        if let Some(fence) = leader.fence(name) {
            if let Err(error) = controller.store.release_lease(&fence).await {
                tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), singleton = name, "cannot release a lease");
            }
        }
    }
}

/// One lease as this controller holds it: its fence, and until when it
/// may act on it (by this process's monotonic clock).
struct Hold {
    fence: Fence,
    until: Instant,
}

/// Takes and renews every singleton's lease each `RENEW`, until the
/// process ends, publishing the ones held.
async fn keep_leases(
    controller: Arc<Controller>,
    lost: Arc<LostFences>,
    stopping: Arc<AtomicBool>,
) {
    let sender = &lost.sender;
    let Some(me) = controller.identity.get().cloned() else {
        tracing::error!("no controller identity: this controller leads no singleton work");
        return;
    };
    let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    // One controller owns an SQLite file: a lease another id holds there is
    // a dead process's (a restart on another address), taken at once.
    let sole = !controller.store.shared_by_controllers();
    let mut holds: BTreeMap<&'static str, Hold> = BTreeMap::new();
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The token last announced per lease: a takeover is a new token.
    let mut announced: BTreeMap<&'static str, i64> = BTreeMap::new();
    loop {
        tick.tick().await;
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        // First what ran out meanwhile (a process paused past its lease
        // stops at once, before it hears from the store).
        expire(&mut holds);
        publish(sender, &mut holds, &lost);
        let sent = Instant::now();
        let now = now_unix_ms();
        let renewals = singleton::ALL.map(|name| {
            controller
                .store
                .acquire_lease(name, &me.id, me.epoch, now, now + lease_ms, sole)
        });
        // All at once, bounded: a store that does not answer in time is a
        // failed renewal, and each hold runs out on this process's clock.
        let answers =
            tokio::time::timeout(RENEW / 2, futures_util::future::join_all(renewals)).await;
        let Ok(answers) = answers else {
            tracing::warn!("cannot renew the leases: the store did not answer in time");
            continue;
        };
        let mut taken = Vec::new();
        for (name, answer) in singleton::ALL.into_iter().zip(answers) {
            match answer {
                Ok(Some(fence)) => {
                    if announced.get(name) != Some(&fence.token) {
                        announced.insert(name, fence.token);
                        taken.push(fence.clone());
                    }
                    let until = sent + LEASE - 2 * RENEW;
                    holds.insert(name, Hold { fence, until });
                }
                Ok(None) => {
                    if holds.remove(name).is_some() {
                        tracing::warn!(singleton = name, "lease taken by another controller");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %pgrollout_shared::errors::error_chain(&error), singleton = name, "cannot renew a lease")
                }
            }
        }
        if !taken.is_empty() {
            announce_takeover(&controller, &taken).await;
        }
        expire(&mut holds);
        publish(sender, &mut holds, &lost);
    }
}

/// Drops the holds whose time ran out unrenewed.
fn expire(holds: &mut BTreeMap<&'static str, Hold>) {
    let now = Instant::now();
    holds.retain(|name, hold| {
        let valid = hold.until > now;
        if !valid {
            tracing::warn!(
                singleton = name,
                "lease not renewed in time: this controller stops its work"
            );
        }
        valid
    });
}

/// Tells the singletons (and the metric) which leases are held now: never
/// a hold the store already refused a write for.
fn publish(
    sender: &watch::Sender<Held>,
    holds: &mut BTreeMap<&'static str, Hold>,
    lost: &LostFences,
) {
    holds.retain(|_, hold| !lost.contains(&hold.fence));
    for name in singleton::ALL {
        leader_gauge()
            .get_or_create(&vec![("singleton", name.to_owned())])
            .set(i64::from(holds.contains_key(name)));
    }
    let held: Held = holds
        .iter()
        .map(|(name, hold)| (*name, hold.fence.clone()))
        .collect();
    sender.send_if_modified(|current| {
        let changed = *current != held;
        *current = held;
        changed
    });
}

/// Leases taken under a new token: logged, and audited once per renewal
/// round (`leader.acquired`, each lease with its fencing token).
async fn announce_takeover(controller: &Controller, taken: &[Fence]) {
    let leads: Vec<String> = taken
        .iter()
        .map(|fence| format!("{} (fencing token {})", fence.name, fence.token))
        .collect();
    let leads = leads.join(", ");
    tracing::info!(leads = %leads, "this controller leads singleton work");
    let Some(first) = taken.first() else {
        return;
    };
    controller
        .audit(AuditEntry {
            actor: "controller".into(),
            action: "leader.acquired".into(),
            outcome: "ok".into(),
            details: format!("{} (epoch {}) leads {leads}", first.holder, first.epoch),
            ..Default::default()
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ControllerConfig;
    use crate::store::Store;

    /// A controller over the SQLite store in `dir`, registered as `serve`
    /// registers it.
    async fn controller(dir: &std::path::Path) -> Arc<Controller> {
        let config_path = dir.join("controller.toml");
        let store_path = dir.join("controller.sqlite");
        std::fs::write(
            &config_path,
            format!(
                "[listen]\noperators = \"127.0.0.1:0\"\nagents = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n\
                 [environments.dev]\nzone = \"dev\"\n",
                store_path.display()
            ),
        )
        .expect("config written");
        let config = ControllerConfig::load(&config_path).expect("valid config");
        let store = Store::open(&store_path).expect("store");
        let controller = Controller::new(config, config_path, store, None);
        super::super::liveness::register(&controller)
            .await
            .expect("registered");
        controller
    }

    /// The details of every `leader.acquired` entry, oldest first.
    async fn takeovers(store: &Store) -> Vec<String> {
        store
            .audit_entries()
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.entry.action == "leader.acquired")
            .map(|e| e.entry.details)
            .collect()
    }

    async fn led(leader: &mut Leader, name: &str) -> Fence {
        tokio::time::timeout(Duration::from_secs(10), leader.acquired(name))
            .await
            .expect("the lease is taken")
    }

    #[tokio::test]
    async fn a_sole_controller_leads_every_singleton_and_its_restart_takes_over_under_a_new_token()
    {
        let dir = tempfile::tempdir().expect("dir");
        let first = controller(dir.path()).await;
        let mut leader = Leader::start(first.clone());
        for name in singleton::ALL {
            assert_eq!(led(&mut leader, name).await.token, 1, "{name}");
        }
        let audited = takeovers(&first.store).await;
        assert_eq!(audited.len(), 1, "one entry for the takeover: {audited:?}");
        for name in singleton::ALL {
            assert!(
                audited[0].contains(&format!("{name} (fencing token 1)")),
                "{audited:?}"
            );
        }

        // Stopped cleanly, then restarted (same id, a new epoch): the new
        // life takes every lease at once, under a new token.
        release(&first, &leader).await;
        let second = controller(dir.path()).await;
        let mut leader = Leader::start(second.clone());
        let fence = led(&mut leader, singleton::SCHEDULER).await;
        assert_eq!((fence.token, fence.epoch), (2, 2));
        let audited = takeovers(&second.store).await;
        assert_eq!(audited.len(), 2, "{audited:?}");
    }

    fn refused_count(name: &str) -> u64 {
        fenced_writes_refused()
            .get_or_create(&vec![("singleton", name.to_owned())])
            .get()
    }

    #[tokio::test]
    async fn a_write_refused_for_a_lost_fence_stops_the_singleton_until_a_new_token() {
        let dir = tempfile::tempdir().expect("dir");
        let controller = controller(dir.path()).await;
        let mut leader = Leader::start(controller.clone());
        let fence = led(&mut leader, singleton::WATCHES).await;
        assert_eq!(
            controller.lease_fence(singleton::WATCHES),
            Some(fence.clone())
        );

        // Another holder takes the lease in the store behind this
        // controller's back (as a controller would after a pause): this
        // controller's next write under its fence is refused.
        let now = now_unix_ms();
        let other = controller
            .store
            .acquire_lease(singleton::WATCHES, "other", 1, now, now + 600_000, true)
            .await
            .expect("taken")
            .expect("sole");
        assert!(other.token > fence.token);
        let refused = controller
            .store
            .record_drift_scan("dev", "", &Default::default(), now, Some(&fence))
            .await
            .expect_err("a stale fence");
        assert!(is_fence_lost(&refused), "{refused:?}");

        let before = refused_count(singleton::WATCHES);
        controller.fence_lost(&fence);
        controller.fence_lost(&fence);
        assert_eq!(
            refused_count(singleton::WATCHES),
            before + 2,
            "each refusal counted"
        );
        // Withdrawn at once, whatever the lease task holds: the singleton's
        // task is aborted by `run_while_leading`.
        assert_eq!(controller.lease_fence(singleton::WATCHES), None);
        tokio::time::timeout(Duration::from_secs(1), leader.lost(&fence))
            .await
            .expect("lost at once");
        // The other leases stay.
        assert!(controller.lease_fence(singleton::SCHEDULER).is_some());
    }
}
