//! The retention task (issue 17, `[store.retention]`): every `every`, prunes
//! the step events and job results of rollouts that finished more than
//! `keep` ago (`store/retention.rs` says what is kept), a page at a time so
//! the store is never held long, and audits what it pruned. Without the
//! table it does nothing. After a run that pruned, the pages it freed are
//! returned to the filesystem a step at a time (`store/compaction.rs`), so
//! the store's file shrinks. Like all of `[store]`, the settings are read at
//! start (a reload keeps them: `engine/reload.rs`).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::engine::leader::is_fence_lost;
use crate::engine::Controller;
use crate::store::leases::{singleton, Fence};
use crate::store::{AuditEntry, Pruned, StoreError, PAGES_PER_STEP};

/// Rollouts pruned per transaction.
const PAGE: u32 = 500;

/// Runs while this controller holds the retention lease (issue 18): each
/// page's deletes carry the lease's fence, and a page the store refuses for
/// it stops retention here (`Controller::fence_lost`), never tried again
/// under that fence.
pub async fn run(controller: Arc<Controller>) {
    loop {
        let Some(retention) = controller.config.store.retention.clone() else {
            return;
        };
        let Some(fence) = controller.lease_fence(singleton::RETENTION) else {
            return;
        };
        match prune(&controller, retention.keep, Some(&fence)).await {
            Ok(_) => {}
            Err(error) if is_fence_lost(&error) => {
                controller.fence_lost(&fence);
                return;
            }
            Err(error) => tracing::error!(
                error = %pgrollout_shared::errors::error_chain(&error),
                "retention: pruning old rollouts failed; trying again at the next run"
            ),
        }
        tokio::time::sleep(retention.every).await;
    }
}

/// One run: everything that finished before now − `keep`, under `fence`
/// (the retention lease's, when run by the task).
pub async fn prune(
    controller: &Controller,
    keep: Duration,
    fence: Option<&Fence>,
) -> Result<Pruned, StoreError> {
    let now = controller
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let cutoff = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let mut total = Pruned::default();
    loop {
        let page = controller
            .store
            .prune_finished_before(cutoff, now, PAGE, fence)
            .await?;
        total.rollouts += page.rollouts;
        total.events += page.events;
        total.results += page.results;
        total.results_kept += page.results_kept;
        if !page.more {
            break;
        }
        // Let the rollouts waiting on the store in between.
        tokio::task::yield_now().await;
    }
    if total.rollouts > 0 {
        let details = format!(
            "{} rollouts that finished before {} pruned: {} step events, {} job results \
             ({} results kept for the promotion and tests-passed gates)",
            total.rollouts,
            humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_millis(u64::try_from(cutoff).unwrap_or(0))
            ),
            total.events,
            total.results,
            total.results_kept
        );
        tracing::info!(
            rollouts = total.rollouts,
            events = total.events,
            results = total.results,
            results_kept = total.results_kept,
            "retention: pruned old rollouts"
        );
        return_free_pages(controller).await?;
        controller
            .store
            .audit(AuditEntry {
                actor: "controller".into(),
                action: "store.pruned".into(),
                outcome: "ok".into(),
                details,
                ..Default::default()
            })
            .await?;
    }
    Ok(total)
}

/// Returns the pages pruning freed to the filesystem, a bounded step per
/// store call with the store free for rollouts in between.
async fn return_free_pages(controller: &Controller) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut returned = 0_u64;
    loop {
        let step = controller.store.return_free_pages(PAGES_PER_STEP).await?;
        returned += step.returned * step.page_size;
        if step.left == 0 || step.returned == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    tracing::info!(
        returned_mib = returned / (1 << 20),
        returned_bytes = returned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "retention: returned pruned space to the filesystem"
    );
    Ok(())
}
