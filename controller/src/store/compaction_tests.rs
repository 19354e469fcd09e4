//! The store's file shrinks after retention prunes (issue 17): measured as
//! an operator would, with the file's size on disk, on a store written
//! through its own API; and a store made before incremental auto-vacuum is
//! converted once when opened, its contents intact.

use std::path::Path;

use pgrollout_shared::proto::{JobEvent, JobResult, Outcome, Plan};

use super::db::params;
use super::{NewRollout, Store};
use crate::domain::agent_report::ReportedResult;

const ROLLOUTS: usize = 200;
/// Events per rollout, each with a message of `MESSAGE_BYTES`.
const EVENTS: u64 = 10;
const MESSAGE_BYTES: usize = 4_000;

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("store file").len()
}

async fn auto_vacuum(store: &Store) -> i64 {
    store
        .call(|c| c.query_row("PRAGMA auto_vacuum", params![], |row| row.get(0)))
        .await
        .expect("pragma")
}

/// `ROLLOUTS` finished deploys with their events and results: ~8 MB.
async fn fill(store: &Store) {
    let plan = Plan {
        plan_id: "cd".repeat(32),
        label: "f".into(),
        ..Plan::default()
    };
    store.save_plan(&plan, 1).await.expect("plan");
    for n in 0..ROLLOUTS {
        let (rollout, job) = (format!("r-{n}"), format!("j-{n}"));
        let at = 1_000 + n as i64;
        store
            .create_rollout(NewRollout::dev_deploy(&rollout, &plan.plan_id, at), &job, 1)
            .await
            .expect("rollout");
        for seq in 0..EVENTS {
            let event = JobEvent {
                job_id: job.clone(),
                attempt: 1,
                seq,
                step: "deploy".into(),
                message: format!("{seq:>width$}", width = MESSAGE_BYTES),
                at_unix_ms: at,
                ..JobEvent::default()
            };
            store.record_event(&event).await.expect("event");
        }
        let result = JobResult {
            job_id: job,
            attempt: 1,
            message: "x".repeat(MESSAGE_BYTES),
            outcome: Outcome::DeployFailed as i32,
            ..JobResult::default()
        };
        // Failed deploys: no gate reads their results, all are pruned.
        store
            .finish_job(&ReportedResult::checked(result), at + 1)
            .await
            .expect("finish");
    }
}

#[tokio::test]
async fn the_store_file_shrinks_after_a_prune_of_many_rollouts() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.sqlite");
    let store = Store::open(&path).expect("open");
    assert_eq!(auto_vacuum(&store).await, 2, "created incremental");
    fill(&store).await;
    // Everything written reaches the main file first.
    store
        .call_checkpointing(super::compaction::truncating_checkpoint)
        .await
        .expect("checkpoint");
    let before = file_size(&path);

    let pruned = store
        .prune_finished_before(i64::MAX, 10_000, 10_000, None)
        .await
        .expect("prune");
    assert_eq!(pruned.rollouts, ROLLOUTS as u64);
    let mut steps = 0;
    loop {
        let step = store.return_free_pages(100).await.expect("return");
        steps += 1;
        if step.left == 0 {
            break;
        }
        assert!(step.returned > 0, "a step returned nothing: {step:?}");
    }
    let after = file_size(&path);
    assert!(
        after * 4 < before,
        "the store's file did not shrink: {before} bytes before the prune, {after} after"
    );
    // Bounded steps: the ~2,000 freed pages took several calls.
    assert!(steps > 5, "{steps} steps");
    eprintln!("store file: {before} bytes before the prune, {after} after, in {steps} steps");

    // The store is whole and keeps working.
    let rollouts: i64 = store
        .call(|c| c.query_row("SELECT count(*) FROM rollouts", params![], |row| row.get(0)))
        .await
        .expect("count");
    assert_eq!(rollouts, ROLLOUTS as i64);
    let check: String = store
        .call(|c| c.query_row("PRAGMA integrity_check", params![], |row| row.get(0)))
        .await
        .expect("check");
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn an_older_store_is_converted_once_when_opened() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.sqlite");
    let store = Store::open(&path).expect("open");
    fill(&store).await;
    // As every store was before: no auto-vacuum.
    store
        .call(|c| c.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;"))
        .await
        .expect("downgrade");
    assert_eq!(auto_vacuum(&store).await, 0);
    drop(store);

    let store = Store::open(&path).expect("reopen");
    assert_eq!(auto_vacuum(&store).await, 2, "converted");
    let events: i64 = store
        .call(|c| {
            c.query_row("SELECT count(*) FROM job_events", params![], |row| {
                row.get(0)
            })
        })
        .await
        .expect("count");
    assert_eq!(events, ROLLOUTS as i64 * EVENTS as i64);
    // And a prune now returns space.
    let before = file_size(&path);
    store
        .prune_finished_before(i64::MAX, 10_000, 10_000, None)
        .await
        .expect("prune");
    while store.return_free_pages(1_000).await.expect("return").left > 0 {}
    assert!(file_size(&path) * 4 < before);
}
