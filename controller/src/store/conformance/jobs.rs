//! Plans, rollouts and their jobs, retention and the metrics' reads, the
//! same on both backends.

use pgrollout_shared::proto::{JobEvent, JobResult, Outcome, Plan};

use crate::domain::agent_report::ReportedResult;
use crate::store::conformance::store_test;
use crate::store::{state, NewRollout, Store};

pub(super) async fn recorded(store: &Store, rollout: &str, job: &str, at: i64) {
    let plan = Plan {
        plan_id: "ab".repeat(32),
        label: "public.f".into(),
        ..Plan::default()
    };
    store.save_plan(&plan, at).await.expect("plan");
    store
        .create_rollout(NewRollout::dev_deploy(rollout, &plan.plan_id, at), job, 1)
        .await
        .expect("rollout");
}

pub(super) fn event(job: &str, seq: u64) -> JobEvent {
    JobEvent {
        job_id: job.into(),
        attempt: 1,
        seq,
        step: "deploy".into(),
        message: format!("step {seq}"),
        at_unix_ms: 10 + seq as i64,
        ..JobEvent::default()
    }
}

pub(super) fn result(job: &str, outcome: Outcome) -> ReportedResult {
    ReportedResult::checked(JobResult {
        job_id: job.into(),
        attempt: 1,
        message: "done".into(),
        outcome: outcome as i32,
        ..JobResult::default()
    })
}

/// `count` deploys `r-0`, `r-1`, … (jobs `j-…`), created at 100 + n with one
/// event each and failed at 200 + n: what retention prunes.
pub(super) async fn failed_rollouts(store: &Store, count: i64) {
    for n in 0..count {
        let (rollout, job) = (format!("r-{n}"), format!("j-{n}"));
        recorded(store, &rollout, &job, 100 + n).await;
        store.record_event(&event(&job, 1)).await.expect("event");
        store
            .finish_job(&result(&job, Outcome::DeployFailed), 200 + n)
            .await
            .expect("finish");
    }
}

store_test!(a_job_is_claimed_once_by_one_agent, |store| {
    recorded(&store, "r-1", "j-1", 1).await;
    // Another zone's agent cannot take it; the first claimant can, and may
    // claim again after a reconnect; a second agent cannot.
    assert!(!store
        .claim_job("j-1", 1, "qa-1", "qa", 2)
        .await
        .expect("claim"));
    assert!(store
        .claim_job("j-1", 1, "dev-1", "dev", 2)
        .await
        .expect("claim"));
    assert!(store
        .claim_job("j-1", 1, "dev-1", "dev", 3)
        .await
        .expect("again"));
    assert!(!store
        .claim_job("j-1", 1, "dev-2", "dev", 3)
        .await
        .expect("other"));
    assert!(!store
        .claim_job("j-1", 2, "dev-1", "dev", 3)
        .await
        .expect("no such attempt"));
});

store_test!(two_agents_racing_for_a_job_one_wins, |store| {
    recorded(&store, "r-1", "j-1", 1).await;
    let claims = (0..8).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_job("j-1", 1, &format!("dev-{n}"), "dev", 2)
                .await
        })
    });
    let mut won = 0;
    for claim in claims {
        if claim.await.expect("task").expect("claim") {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one agent holds the job");
});

store_test!(
    events_are_kept_once_and_a_result_settles_the_rollout_once,
    |store| {
        recorded(&store, "r-1", "j-1", 1).await;
        assert!(store
            .claim_job("j-1", 1, "dev-1", "dev", 2)
            .await
            .expect("claim"));
        assert!(store.record_event(&event("j-1", 1)).await.expect("event"));
        assert!(store.record_event(&event("j-1", 2)).await.expect("event"));
        assert!(
            !store
                .record_event(&event("j-1", 1))
                .await
                .expect("duplicate"),
            "a replayed event is dropped"
        );
        assert!(store
            .finish_job(&result("j-1", Outcome::Succeeded), 5)
            .await
            .expect("finish"));
        assert!(
            !store
                .finish_job(&result("j-1", Outcome::DeployFailed), 6)
                .await
                .expect("again"),
            "a duplicate result is dropped"
        );
        let summary = store
            .rollout_summary("r-1")
            .await
            .expect("read")
            .expect("rollout");
        assert_eq!(summary.state, state::SUCCEEDED);
        let status = store
            .rollout_status("r-1")
            .await
            .expect("status")
            .expect("rollout");
        assert_eq!(status.state, state::SUCCEEDED);
        assert_eq!(
            store
                .rollout_of_job("j-1")
                .await
                .expect("job")
                .map(|r| r.rollout_id),
            Some("r-1".to_owned())
        );
    }
);

store_test!(
    an_abandoned_job_fails_its_rollout_and_a_late_result_corrects_it,
    |store| {
        recorded(&store, "r-1", "j-1", 1).await;
        store
            .abandon_job("j-1", 1, state::UNKNOWN, 2, "agent lost", 3)
            .await
            .expect("abandon");
        assert_eq!(
            store
                .rollout_summary("r-1")
                .await
                .expect("read")
                .expect("rollout")
                .state,
            state::UNKNOWN
        );
        // The agent's ledger decides once it reports.
        assert!(store
            .finish_job(&result("j-1", Outcome::Succeeded), 4)
            .await
            .expect("late result"));
        assert_eq!(
            store
                .rollout_summary("r-1")
                .await
                .expect("read")
                .expect("rollout")
                .state,
            state::SUCCEEDED
        );
    }
);

store_test!(
    retention_prunes_finished_rollouts_and_counts_them,
    |store| {
        failed_rollouts(&store, 3).await;
        let pruned = store
            .prune_finished_before(202, 300, 100, None)
            .await
            .expect("prune");
        assert_eq!(
            (pruned.rollouts, pruned.events, pruned.results, pruned.more),
            (2, 2, 2, false)
        );
        let again = store
            .prune_finished_before(202, 301, 100, None)
            .await
            .expect("prune again");
        assert_eq!(again.rollouts, 0, "pruned once");
        // The rollouts themselves stay listed; only their bulk goes.
        assert!(store.rollout_status("r-0").await.expect("status").is_some());
    }
);

store_test!(
    the_metrics_read_counts_by_state_and_the_change_feed,
    |store| {
        recorded(&store, "r-1", "j-1", 1).await;
        recorded(&store, "r-2", "j-2", 2).await;
        store
            .finish_job(&result("j-1", Outcome::Succeeded), 5)
            .await
            .expect("finish");
        let mut counts: Vec<(String, String, u64)> = store
            .rollouts_by_state()
            .await
            .expect("counts")
            .into_iter()
            .filter(|c| c.count > 0)
            .map(|c| (c.kind, c.state, c.count))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                ("deploy".to_owned(), "running".to_owned(), 1),
                ("deploy".to_owned(), "succeeded".to_owned(), 1)
            ]
        );
        let (watermark, finished) = store.finished_as_of_change().await.expect("finished");
        assert_eq!(finished.len(), 1);
        store
            .finish_job(&result("j-2", Outcome::DeployFailed), 6)
            .await
            .expect("finish");
        let changes = store
            .rollout_changes_since(watermark)
            .await
            .expect("changes");
        assert!(
            changes.watermark > watermark,
            "the second rollout's end is a change"
        );
        store.ping().await.expect("ping");
    }
);
