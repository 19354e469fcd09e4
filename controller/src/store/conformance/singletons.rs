//! Singleton work among several controllers (issue 18): the rule "only a
//! dead controller's work" for requests being started and fleet rollouts
//! driven, the same on both backends.

use crate::store::conformance::requests::parked;
use crate::store::conformance::store_test;
use crate::store::{fleet_state, request_state, FleetRecord, Settle, Store, Sweep};

const DEAD_AFTER: i64 = 10_000;
const NOW: i64 = 1_000_000;

/// Three controllers: `alive` (heartbeat 1 s ago), `dead` (20 s ago) and
/// `me`, restarted (epoch 2).
async fn three_controllers(store: &Store) {
    store
        .register_controller("alive", "a:1", NOW - 1_000)
        .await
        .expect("alive");
    store
        .register_controller("dead", "d:1", NOW - 2 * DEAD_AFTER)
        .await
        .expect("dead");
    store.register_controller("me", "m:1", 1).await.expect("me");
    store
        .register_controller("me", "m:1", NOW)
        .await
        .expect("me again");
}

fn sweep(which: Settle, now: i64) -> Sweep {
    Sweep {
        me: "me".into(),
        which,
        now,
        dead_after_ms: DEAD_AFTER,
    }
}

/// A request claimed for its start by `starter`.
async fn starting(store: &Store, request_id: &str, starter: Option<&str>) {
    parked(store, request_id).await;
    assert!(store
        .claim_request_start(
            request_id,
            &[request_state::AWAITING_APPROVAL],
            starter,
            None,
            NOW
        )
        .await
        .expect("claim"));
}

/// A fleet rollout running, driven by `driver`.
async fn running_fleet(store: &Store, fleet_id: &str, driver: Option<&str>) {
    let record = FleetRecord {
        id: fleet_id.into(),
        environment: "prod".into(),
        plan_id: "ab".repeat(32),
        actor: "alice".into(),
        trace_id: "t".into(),
        policy: "halt".into(),
        state: fleet_state::RUNNING.into(),
        created_at: 1,
    };
    store.create_fleet(&record, &[]).await.expect("fleet");
    if let Some(driver) = driver {
        store
            .record_fleet_driver(fleet_id, driver)
            .await
            .expect("driver");
    }
}

store_test!(
    requests_being_started_and_fleets_driven_are_settled_only_when_their_controller_is_dead,
    |store| {
        three_controllers(&store).await;
        for (id, owner) in [
            ("alive", Some("alive")),
            ("dead", Some("dead")),
            ("me", Some("me")),
            ("none", None),
        ] {
            starting(&store, &format!("r-{id}"), owner).await;
            running_fleet(&store, &format!("f-{id}"), owner).await;
        }
        // A claim is a compare-and-set: a request already starting is not
        // claimed again.
        assert!(!store
            .claim_request_start(
                "r-alive",
                &[request_state::AWAITING_APPROVAL],
                Some("me"),
                None,
                NOW
            )
            .await
            .expect("claim again"));

        // While running: only the dead controller's.
        let dead_only = sweep(Settle::DeadOnly, NOW);
        assert_eq!(
            store.orphaned_starts(&dead_only).await.expect("starts"),
            ["r-dead"]
        );
        assert_eq!(
            store
                .halt_interrupted_fleets(NOW, Some(&dead_only))
                .await
                .expect("halt"),
            ["f-dead"]
        );
        // Halted once: a second sweep (another controller's) finds nothing.
        assert!(store
            .halt_interrupted_fleets(NOW, Some(&dead_only))
            .await
            .expect("again")
            .is_empty());

        // At start: also this controller's previous life's; the unowned ones
        // wait while another controller is alive; the live one's are its own.
        let at_start = sweep(Settle::AtStart, NOW);
        let mut starts = store.orphaned_starts(&at_start).await.expect("starts");
        starts.sort();
        assert_eq!(starts, ["r-dead", "r-me"]);
        assert_eq!(
            store
                .halt_interrupted_fleets(NOW, Some(&at_start))
                .await
                .expect("halt"),
            ["f-me"]
        );
        let (alive, _) = store.fleet("f-alive").await.expect("read").expect("some");
        assert_eq!(
            alive.state,
            fleet_state::RUNNING,
            "a live driver's fleet runs on"
        );

        // Once the other controller is dead too, everything is settled.
        let later = sweep(Settle::AtStart, NOW + 2 * DEAD_AFTER);
        let mut starts = store.orphaned_starts(&later).await.expect("starts");
        starts.sort();
        assert_eq!(starts, ["r-alive", "r-dead", "r-me", "r-none"]);
        assert_eq!(
            store
                .halt_interrupted_fleets(NOW, Some(&later))
                .await
                .expect("halt"),
            ["f-alive", "f-none"]
        );
    }
);
