//! This controller's leadership of the singletons (issue 18) as the rest
//! of the engine sees it: which leases it holds now, waiting for one, and
//! giving one up when the store refused a write under it. A leaf: the lease
//! task that takes and renews the leases is `leader.rs`, which needs the
//! controller; the controller keeps this handle.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use pgrollout_shared::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::store::leases::{Fence, FenceLost};

/// The leases this controller holds now, by singleton.
pub(super) type Held = BTreeMap<&'static str, Fence>;

/// A handle on this controller's leadership; cheap to clone.
#[derive(Clone)]
pub struct Leader {
    pub(super) held: watch::Receiver<Held>,
    /// Set at a clean stop: the lease task renews nothing more.
    pub(super) stopping: Arc<AtomicBool>,
    /// The holds the store refused a write for, and the publisher of
    /// [`Leader::held`], so a refusal stops the singleton at once.
    pub(super) lost: Arc<LostFences>,
}

/// Fences the store refused a write for: never published again (a lease's
/// token only grows, so such a fence never holds again).
pub(super) struct LostFences {
    pub(super) fences: Mutex<Vec<Fence>>,
    pub(super) sender: watch::Sender<Held>,
}

impl LostFences {
    pub(super) fn contains(&self, fence: &Fence) -> bool {
        self.lock().contains(fence)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fence>> {
        self.fences.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Leader {
    /// The store refused a write made under `fence` (issue 18): another
    /// controller took the lease while this one still believed it held it
    /// (paused, cut off). The singleton stops here at once — its hold is
    /// withdrawn, so [`Leader::run_while_leading`] aborts it and the
    /// scheduler leaves its loop — and starts again only under a new token.
    /// Logged once per fence, each refusal counted in
    /// `pgrollout_controller_fenced_writes_refused_total{singleton}`.
    pub fn fence_lost(&self, fence: &Fence) {
        fenced_writes_refused()
            .get_or_create(&vec![("singleton", fence.name.clone())])
            .inc();
        {
            let mut lost = self.lost.lock();
            if lost.contains(fence) {
                return;
            }
            lost.push(fence.clone());
        }
        tracing::warn!(
            singleton = %fence.name,
            token = fence.token,
            error = %FenceLost::of(fence),
            "lost the lease: the store refused this controller's write; its work stops here"
        );
        self.lost.sender.send_if_modified(|held| {
            if held.get(fence.name.as_str()) == Some(fence) {
                held.remove(fence.name.as_str());
                true
            } else {
                false
            }
        });
    }

    /// The fence of `name`'s lease while this controller holds it.
    pub fn fence(&self, name: &str) -> Option<Fence> {
        self.held.borrow().get(name).cloned()
    }

    /// Waits until this controller holds `name`'s lease.
    pub async fn acquired(&mut self, name: &str) -> Fence {
        loop {
            if let Some(fence) = self.fence(name) {
                return fence;
            }
            if self.held.changed().await.is_err() {
                // The lease task ended: never leader again.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Completes once `fence` is no longer this controller's hold on its
    /// lease: lost, expired unrenewed, or taken again under a new token.
    pub async fn lost(&mut self, fence: &Fence) {
        loop {
            if self.fence(&fence.name).as_ref() != Some(fence) {
                return;
            }
            if self.held.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs `task` whenever this controller holds `name`'s lease, and
    /// aborts it when the lease is lost (for work that may stop anywhere:
    /// each run starts over from the store). Runs until the process ends.
    pub async fn run_while_leading<F, Fut>(mut self, name: &'static str, task: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let fence = self.acquired(name).await;
            let running = tokio::spawn(task());
            self.lost(&fence).await;
            running.abort();
            tracing::warn!(
                singleton = name,
                token = fence.token,
                "no longer the leader: stopped"
            );
        }
    }
}

/// `pgrollout_controller_leader{singleton}`: 1 while this controller holds
/// the singleton's lease, 0 otherwise.
pub fn leader_gauge() -> &'static Family<Labels, Gauge> {
    static LEADER: OnceLock<Family<Labels, Gauge>> = OnceLock::new();
    LEADER.get_or_init(Family::default)
}

/// `pgrollout_controller_fenced_writes_refused_total{singleton}`: writes of
/// this controller's singleton work the store refused for a lost lease.
pub fn fenced_writes_refused() -> &'static Family<Labels, Counter> {
    static REFUSED: OnceLock<Family<Labels, Counter>> = OnceLock::new();
    REFUSED.get_or_init(Family::default)
}

/// Whether `error` is the store refusing a write for a lost lease.
pub fn is_fence_lost(error: &crate::store::StoreError) -> bool {
    matches!(error, crate::store::StoreError::FenceLost(_))
}
