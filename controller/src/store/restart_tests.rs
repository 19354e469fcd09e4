//! What a controller killed mid-dispatch leaves, and what the next one makes
//! of it (`interrupt_running`): a job offered to an agent is in doubt; a job
//! recorded but never offered failed, and nothing ran. Found by the soak: a
//! `kill -9` between recording a rollout and offering its job left it
//! `unknown` for good, since no agent would ever report it.

use pgrollout_shared::proto::Plan;

use super::faults::HeldJob;
use super::*;

async fn recorded(store: &Store, rollout_id: &str, job_id: &str) {
    let plan = Plan {
        plan_id: "ab".repeat(32),
        ..Default::default()
    };
    store.save_plan(&plan, 1).await.expect("plan");
    store
        .create_rollout(
            NewRollout::dev_deploy(rollout_id, &plan.plan_id, 1),
            job_id,
            1,
        )
        .await
        .expect("rollout");
}

async fn state_of(store: &Store, rollout_id: &str) -> String {
    store
        .rollout_summary(rollout_id)
        .await
        .expect("read")
        .expect("rollout exists")
        .state
}

crate::store::conformance::store_test!(
    a_job_never_offered_fails_and_an_offered_one_is_in_doubt,
    |store, backend| {
        recorded(&store, "r-never", "j-never").await;
        recorded(&store, "r-offered", "j-offered").await;
        store
            .record_offer("j-offered", 1, "dev-1", vec![1])
            .await
            .expect("offer");

        let interrupted = store.interrupt_running(2).await.expect("interrupt");

        let ids = |jobs: &[HeldJob]| jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&interrupted.never_offered), ["j-never"]);
        assert_eq!(ids(&interrupted.in_doubt), ["j-offered"]);
        assert_eq!(state_of(&store, "r-never").await, state::FAILED);
        assert_eq!(state_of(&store, "r-offered").await, state::UNKNOWN);
        // The failed job is finished: no agent's Hello is squared against it.
        assert!(
            store
                .jobs_held_by("dev-1", "dev")
                .await
                .expect("held")
                .len()
                == 1
        );
    }
);
