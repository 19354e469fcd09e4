//! A blob this controller stored that no longer decodes fails the read with
//! `StoreError::Corrupt`, naming the message and its row — never an empty
//! plan, a missing result or a blank watch (issue 14). One test per kind of
//! blob: plans, job results, watch definitions and samples.

use pgrollout_shared::errors::error_chain;
use pgrollout_shared::proto::{JobResult, Outcome, Plan, Routine};

use super::*;

/// Field 1, length-delimited, five bytes long — and no bytes: no message
/// decodes from it.
const CORRUPT: &str = "x'0a05'";

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("s.sqlite")).expect("open");
    (dir, store)
}

fn plan() -> Plan {
    Plan {
        plan_id: "ab".repeat(32),
        commit_sha: "cd".repeat(20),
        label: "t".into(),
        routines: vec![Routine {
            schema: "public".into(),
            name: "f".into(),
            arg_types: vec!["integer".into()],
            create_sql: "CREATE OR REPLACE FUNCTION public.f(integer) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$".into(),
            ..Default::default()
        }],
    }
}

/// Overwrites stored bytes as a damaged disk or a hand edit would.
async fn damage(store: &Store, sql: String) {
    store
        .call(move |c| c.execute(&sql, params![]))
        .await
        .expect("damage the row");
}

/// The read failed as corruption, and says which message of which row.
#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(read: Result<T, StoreError>, names: &str) {
    let error = read.expect_err("a corrupt row must fail the read, not read as empty");
    let text = error_chain(&error);
    assert!(matches!(error, StoreError::Corrupt(_)), "{text}");
    assert!(
        text.starts_with("the controller's store is corrupt: ") && text.contains(names),
        "{text}"
    );
}

/// A deploy of `plan()` to dev that succeeded, as `serve` records one.
async fn deployed(store: &Store) {
    store.save_plan(&plan(), 1).await.expect("plan");
    store
        .create_rollout(NewRollout::dev_deploy("r-1", &plan().plan_id, 1), "j-1", 1)
        .await
        .expect("rollout");
    let result = JobResult {
        job_id: "j-1".into(),
        attempt: 1,
        outcome: Outcome::Succeeded as i32,
        ..Default::default()
    };
    store
        .finish_job(
            &crate::domain::agent_report::ReportedResult::checked(result),
            2,
        )
        .await
        .expect("finish");
}

#[tokio::test]
async fn a_request_whose_stored_plan_is_corrupt_is_an_error_not_an_empty_plan() {
    let (_dir, store) = open();
    store.save_plan(&plan(), 1).await.expect("plan");
    let pending = PendingRollout {
        request_id: "req-1".into(),
        environment: "prod".into(),
        plan: crate::domain::plan::Plan::try_from(plan()).expect("a valid plan"),
        actor: "operator t".into(),
        trace_id: "t".into(),
        continue_on_error: false,
        ticket: String::new(),
        runbook: String::new(),
        rollback_plan: String::new(),
        state: request_state::AWAITING_APPROVAL.into(),
        rollout_id: None,
    };
    store.park_rollout(&pending, 2).await.expect("park");
    let intact = store.pending_rollout("req-1").await.expect("read");
    assert_eq!(intact.expect("parked").plan.to_wire(), plan());

    damage(&store, format!("UPDATE plans SET content = {CORRUPT}")).await;
    assert_corrupt(
        store.pending_rollout("req-1").await,
        "the plan of request req-1 does not decode",
    );
    assert_corrupt(
        store.list_requests("", "", 10).await,
        "the plan of request req-1 does not decode",
    );
}

#[tokio::test]
async fn a_rollout_whose_stored_plan_or_result_is_corrupt_is_an_error() {
    let (_dir, store) = open();
    deployed(&store).await;
    let intact = store.rollout_status("r-1").await.expect("read");
    assert_eq!(intact.expect("recorded").routine_count, 1);
    assert!(store
        .plan_succeeded_in(&plan().plan_id, "dev")
        .await
        .expect("gate read")
        .is_some());

    // A corrupt result: not "no result", and not a deploy whose smoke tests
    // never ran, which a promotion gate would report instead.
    damage(&store, format!("UPDATE jobs SET result = {CORRUPT}")).await;
    assert_corrupt(
        store.rollout_status("r-1").await,
        "the job result of rollout r-1 does not decode",
    );
    assert_corrupt(
        store.list_rollouts("", "", 10).await,
        "the job result of rollout r-1 does not decode",
    );
    assert_corrupt(
        store.plan_succeeded_in(&plan().plan_id, "dev").await,
        "the job result of rollout r-1 does not decode",
    );

    // A corrupt plan: not a rollout of no routines.
    let result = JobResult {
        job_id: "j-1".into(),
        attempt: 1,
        outcome: Outcome::Succeeded as i32,
        ..Default::default()
    };
    store
        .finish_job(
            &crate::domain::agent_report::ReportedResult::checked(result),
            3,
        )
        .await
        .expect("finish again");
    damage(&store, format!("UPDATE plans SET content = {CORRUPT}")).await;
    assert_corrupt(
        store.rollout_status("r-1").await,
        "the plan of rollout r-1 does not decode",
    );
}

#[tokio::test]
async fn a_watch_whose_stored_definition_or_samples_are_corrupt_is_an_error() {
    let (_dir, store) = open();
    let watch = WatchRecord {
        id: "w-1".into(),
        environment: "prod".into(),
        procedure: "f".into(),
        created_at: 1,
        ends_at: i64::MAX,
        state: "watching".into(),
        ..Default::default()
    };
    assert!(store.insert_watch(&watch).await.expect("insert").is_none());
    assert_eq!(store.watch("w-1").await.expect("read"), Some(watch));

    for (column, names) in [
        (
            "last_sample",
            "the latest sample of watch w-1 does not decode",
        ),
        ("baseline", "the baseline of watch w-1 does not decode"),
        ("spec", "the definition of watch w-1 does not decode"),
    ] {
        damage(&store, format!("UPDATE watches SET {column} = {CORRUPT}")).await;
        assert_corrupt(store.watch("w-1").await, names);
        assert_corrupt(store.live_watches(None, 2).await, names);
    }
}
