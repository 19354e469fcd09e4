//! Several controllers on one store (issue 18): which jobs a controller
//! settles at start and while running, the same on both backends.

use pgrollout_shared::proto::Plan;

use crate::store::conformance::store_test;
use crate::store::{NewRollout, Settle, Store};

const DEAD_AFTER: i64 = 10_000;
const NOW: i64 = 1_000_000;

/// A rollout whose job was offered to agent `dev-1`, by `controller`.
async fn offered(store: &Store, rollout: &str, job: &str, controller: Option<&str>) {
    let plan = Plan {
        plan_id: "cd".repeat(32),
        label: "public.f".into(),
        ..Plan::default()
    };
    store.save_plan(&plan, 1).await.expect("plan");
    store
        .create_rollout(NewRollout::dev_deploy(rollout, &plan.plan_id, 1), job, 1)
        .await
        .expect("rollout");
    store
        .record_offer(job, 1, "dev-1", vec![1])
        .await
        .expect("offer");
    if let Some(controller) = controller {
        store
            .record_job_controller(job, 1, controller)
            .await
            .expect("owner");
    }
}

fn ids(jobs: &[crate::store::faults::HeldJob]) -> Vec<&str> {
    let mut ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

store_test!(
    a_starting_controller_settles_only_the_jobs_of_dead_controllers,
    |store| {
        store
            .register_controller("alive", "a:1", NOW - 1_000)
            .await
            .expect("alive");
        store
            .register_controller("dead", "d:1", NOW - 2 * DEAD_AFTER)
            .await
            .expect("dead");
        assert_eq!(
            store.register_controller("me", "m:1", 1).await.expect("me"),
            1
        );
        assert_eq!(
            store
                .register_controller("me", "m:1", NOW)
                .await
                .expect("me again"),
            2,
            "a restart is a new epoch"
        );
        offered(&store, "r-alive", "j-alive", Some("alive")).await;
        offered(&store, "r-dead", "j-dead", Some("dead")).await;
        offered(&store, "r-mine", "j-mine", Some("me")).await;
        offered(&store, "r-none", "j-none", None).await;

        // While running: only the dead controller's job.
        let running = store
            .settle_orphaned_jobs("me", Settle::DeadOnly, NOW, DEAD_AFTER)
            .await
            .expect("sweep");
        assert_eq!(ids(&running.in_doubt), ["j-dead"]);
        // At start: also this controller's previous life's; the unclaimed job
        // waits while another controller is alive; the live one's is its own.
        let at_start = store
            .settle_orphaned_jobs("me", Settle::AtStart, NOW, DEAD_AFTER)
            .await
            .expect("start");
        assert_eq!(ids(&at_start.in_doubt), ["j-mine"]);
        assert!(at_start.never_offered.is_empty());
        assert!(store
            .controller_heartbeat("me", 2, NOW)
            .await
            .expect("beat"));
        assert!(!store
            .controller_heartbeat("me", 1, NOW)
            .await
            .expect("stale epoch"));

        // Once the other controller is dead too, the unclaimed job is settled.
        let later = NOW + 2 * DEAD_AFTER;
        let after = store
            .settle_orphaned_jobs("me", Settle::AtStart, later, DEAD_AFTER)
            .await
            .expect("later");
        assert_eq!(ids(&after.in_doubt), ["j-alive", "j-none"]);
    }
);
