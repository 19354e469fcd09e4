//! Every write of singleton work carries its lease's fence (issue 18, item
//! 2), the same on both backends: a watch's sample, a scheduled drift
//! scan's record and a retention page made under a token another controller
//! has since superseded are refused with `FenceLost` and change nothing;
//! the new holder's go through.

use pgrollout_shared::proto::{
    DriftFinding, DriftReport, DriftResponse, WatchSample, WatchSampleJob, WatchedName,
};

use crate::store::conformance::jobs::failed_rollouts;
use crate::store::conformance::store_test;
use crate::store::leases::singleton::{DRIFT, RETENTION, WATCHES};
use crate::store::leases::{Fence, FenceLost};
use crate::store::{Store, StoreError, WatchProgress, WatchRecord};

const LEASE: i64 = 10_000;
const NOW: i64 = 1_000_000;
/// After `a`'s leases expired: when `b` takes them over.
const LATER: i64 = NOW + LEASE + 1;

/// Lease `name` taken by `a` at `NOW`, then by `b` once it expired: the
/// stale fence and the current one.
async fn taken_over(store: &Store, name: &str) -> (Fence, Fence) {
    let old = store
        .acquire_lease(name, "a", 1, NOW, NOW + LEASE, false)
        .await
        .expect("a asks")
        .expect("free");
    let new = store
        .acquire_lease(name, "b", 1, LATER, LATER + LEASE, false)
        .await
        .expect("b asks")
        .expect("expired");
    assert!(new.token > old.token);
    (old, new)
}

fn refused(answer: Result<impl std::fmt::Debug, StoreError>, fence: &Fence) {
    match answer {
        Err(StoreError::FenceLost(lost)) => assert_eq!(lost, FenceLost::of(fence)),
        other => panic!("a write under a stale token went through: {other:?}"),
    }
}

fn live_watch(id: &str) -> WatchRecord {
    WatchRecord {
        id: id.into(),
        environment: "prod".into(),
        procedure: "addarc".into(),
        spec: WatchSampleJob {
            watch_id: id.into(),
            names: vec![WatchedName {
                schema: "public".into(),
                name: "addarc".into(),
            }],
            ..Default::default()
        },
        threshold_percent: 120,
        every_ms: 1_000,
        created_by: "alice".into(),
        created_at: NOW,
        ends_at: i64::MAX,
        state: "watching".into(),
        reason: "baseline taken".into(),
        ..Default::default()
    }
}

fn sampled(at: i64) -> WatchProgress {
    WatchProgress {
        sample: Some(WatchSample {
            sampled_at_unix_ms: at,
            track_functions: "all".into(),
            ..Default::default()
        }),
        state: "watching".into(),
        reason: format!("sampled at {at}"),
        ..Default::default()
    }
}

fn scan(at: i64, drifted: &str) -> DriftResponse {
    DriftResponse {
        environment: "prod".into(),
        scanned_at_unix_ms: at,
        report: Some(DriftReport {
            routines_checked: 1,
            findings: vec![DriftFinding {
                kind: "changed".into(),
                identity: drifted.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

store_test!(
    a_watch_sample_under_a_stale_fencing_token_is_refused,
    |store| {
        store
            .insert_watch(&live_watch("w-1"))
            .await
            .expect("insert");
        let (old, new) = taken_over(&store, WATCHES).await;

        refused(
            store
                .record_watch_progress("w-1", &sampled(NOW + 1), Some(&old))
                .await,
            &old,
        );
        let watch = store.watch("w-1").await.expect("read").expect("watch");
        assert_eq!(
            (watch.samples, watch.last_sample, watch.reason.as_str()),
            (0, None, "baseline taken"),
            "untouched"
        );

        // The new leader's sample is recorded.
        assert!(store
            .record_watch_progress("w-1", &sampled(LATER + 1), Some(&new))
            .await
            .expect("record"));
        let watch = store.watch("w-1").await.expect("read").expect("watch");
        assert_eq!(watch.samples, 1);
        assert_eq!(
            watch.last_sample.map(|s| s.sampled_at_unix_ms),
            Some(LATER + 1)
        );
        // A cancelled watch is not a lost lease: nothing written, no error.
        assert!(store
            .cancel_watch("w-1", "bob", LATER + 2)
            .await
            .expect("cancel"));
        assert!(!store
            .record_watch_progress("w-1", &sampled(LATER + 3), Some(&new))
            .await
            .expect("cancelled meanwhile"));
    }
);

store_test!(
    a_drift_scan_recorded_under_a_stale_fencing_token_is_refused,
    |store| {
        // An operator's scan (no fence), then the schedule's.
        store
            .record_drift_scan("prod", "", &scan(NOW, "public.f()"), NOW, None)
            .await
            .expect("operator's scan");
        let (old, new) = taken_over(&store, DRIFT).await;

        refused(
            store
                .record_drift_scan(
                    "prod",
                    "",
                    &scan(NOW + 1, "public.g()"),
                    NOW + 1,
                    Some(&old),
                )
                .await,
            &old,
        );
        // A first scan of another scope is refused as well (an insert).
        refused(
            store
                .record_drift_scan("qa", "", &scan(NOW + 1, "public.g()"), NOW + 1, Some(&old))
                .await,
            &old,
        );
        let latest = store
            .latest_drift_scan("prod", "")
            .await
            .expect("read")
            .expect("the operator's");
        assert_eq!(latest.scanned_at, NOW, "untouched");
        assert!(store
            .latest_drift_scan("qa", "")
            .await
            .expect("read")
            .is_none());

        let previous = store
            .record_drift_scan("prod", "", &scan(LATER, "public.h()"), LATER, Some(&new))
            .await
            .expect("the new leader's scan")
            .expect("it replaces one");
        assert_eq!(previous.scanned_at, NOW);
        assert_eq!(
            store
                .latest_drift_scan("prod", "")
                .await
                .expect("read")
                .map(|s| s.scanned_at),
            Some(LATER)
        );
    }
);

store_test!(
    a_retention_page_under_a_stale_fencing_token_deletes_nothing,
    |store| {
        failed_rollouts(&store, 2).await;
        let (old, new) = taken_over(&store, RETENTION).await;

        refused(
            store
                .prune_finished_before(i64::MAX, LATER, 100, Some(&old))
                .await,
            &old,
        );
        // Nothing went, and the cursor did not move: the new holder prunes both.
        let pruned = store
            .prune_finished_before(i64::MAX, LATER, 100, Some(&new))
            .await
            .expect("the new leader's page");
        assert_eq!((pruned.rollouts, pruned.events, pruned.results), (2, 2, 2));
    }
);
