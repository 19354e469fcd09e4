//! Approvals, scheduled requests and fleets on both backends: every
//! compare-and-set lets exactly one caller through.

use crate::domain::plan::Plan;
use crate::store::conformance::store_test;
use crate::store::{
    fleet_policy, fleet_state, request_state, Approval, FleetRecord, FleetTargetRow,
    PendingRollout, Store,
};

/// The sample project's plan, as the engine keeps it.
fn plan() -> Plan {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/project");
    let project = crate::project::Project::load(&root).expect("the sample project");
    let wire = crate::plan::build_plan(project.routines().to_vec(), "all", "0123abc");
    Plan::try_from(wire).expect("a valid plan")
}

fn pending(request_id: &str) -> PendingRollout {
    PendingRollout {
        request_id: request_id.into(),
        environment: "prod".into(),
        plan: plan(),
        actor: "operator alice".into(),
        trace_id: "t".into(),
        continue_on_error: true,
        ticket: "CHG-1".into(),
        runbook: "rb".into(),
        rollback_plan: "rp".into(),
        state: request_state::AWAITING_APPROVAL.into(),
        rollout_id: None,
    }
}

pub(super) async fn parked(store: &Store, request_id: &str) -> PendingRollout {
    let p = pending(request_id);
    store.save_plan(&p.plan, 1).await.expect("plan");
    store.park_rollout(&p, 1).await.expect("park");
    p
}

fn approval(approver: &str, decision: &str) -> Approval {
    Approval {
        approver: approver.into(),
        role: "dba".into(),
        decision: decision.into(),
    }
}

store_test!(approvals_count_distinct_approvers_and_close_once, |store| {
    let p = parked(&store, "r-1").await;
    let read = store
        .pending_rollout("r-1")
        .await
        .expect("read")
        .expect("parked");
    assert_eq!(read.plan.plan_id, p.plan.plan_id);
    assert!(read.continue_on_error, "a flag reads back as stored");
    assert_eq!(read.ticket, "CHG-1");
    let first = store
        .record_approval("r-1", &p.plan.plan_id, &approval("bob", "approve"), "ok", 2)
        .await
        .expect("approve");
    assert!(first.changed);
    let repeat = store
        .record_approval(
            "r-1",
            &p.plan.plan_id,
            &approval("bob", "approve"),
            "again",
            3,
        )
        .await
        .expect("repeat");
    assert!(!repeat.changed, "the same decision twice changes nothing");
    assert_eq!(repeat.approvals.len(), 1, "one approver counts once");
    let second = store
        .record_approval(
            "r-1",
            &p.plan.plan_id,
            &approval("carol", "approve"),
            "ok",
            4,
        )
        .await
        .expect("second");
    assert_eq!(second.approvals.len(), 2);
    let changed = store
        .record_approval("r-1", &p.plan.plan_id, &approval("bob", "reject"), "no", 5)
        .await
        .expect("changed mind");
    assert!(changed.changed);
    assert_eq!(
        store
            .request_approvals("r-1", &p.plan.plan_id)
            .await
            .expect("read")
            .len(),
        2
    );
    // Closing is a compare-and-set: the first decision wins.
    assert!(store
        .decide_pending("r-1", request_state::APPROVED, Some("ro-1"), 6)
        .await
        .expect("decide"));
    assert!(!store
        .decide_pending("r-1", request_state::REJECTED, None, 7)
        .await
        .expect("again"));
    let read = store
        .pending_rollout("r-1")
        .await
        .expect("read")
        .expect("parked");
    assert_eq!(
        (read.state.as_str(), read.rollout_id.as_deref()),
        ("approved", Some("ro-1"))
    );
    assert!(store
        .pending_rollout("r-none")
        .await
        .expect("read")
        .is_none());
});

store_test!(racing_deciders_close_a_request_once, |store, backend| {
    parked(&store, "r-1").await;
    let other = backend.reopen();
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let s = if n % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                s.decide_pending("r-1", request_state::APPROVED, Some(&format!("ro-{n}")), 2)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.expect("task").expect("decide"));
    }
    assert_eq!(won, 1);
});

store_test!(scheduled_requests_fall_due_and_start_once, |store| {
    let p = pending("s-1");
    store.save_plan(&p.plan, 1).await.expect("plan");
    store
        .schedule_request(&p, 1_000, "sat 02:00-04:00", 1)
        .await
        .expect("schedule");
    assert_eq!(store.next_run_at().await.expect("next"), Some(1_000));
    assert!(store.due_requests(999).await.expect("due").is_empty());
    assert_eq!(store.due_requests(1_000).await.expect("due"), ["s-1"]);
    let schedule = store
        .request_schedule("s-1")
        .await
        .expect("read")
        .expect("scheduled");
    assert_eq!(
        (schedule.run_at, schedule.window.as_str()),
        (Some(1_000), "sat 02:00-04:00")
    );
    assert!(store
        .reschedule_request("s-1", &[request_state::SCHEDULED], 2_000, "later", "moved")
        .await
        .expect("reschedule"));
    assert_eq!(store.count_start_attempt("s-1").await.expect("count"), 1);
    assert_eq!(
        store
            .list_requests("prod", "", 10)
            .await
            .expect("list")
            .len(),
        1
    );
    // Starting it is a move out of `scheduled`: one caller wins.
    let from = [request_state::SCHEDULED];
    assert!(store
        .move_request(
            "s-1",
            &from,
            request_state::STARTED,
            Some("ro-1"),
            "started",
            3
        )
        .await
        .expect("start"));
    assert!(!store
        .move_request(
            "s-1",
            &from,
            request_state::STARTED,
            Some("ro-2"),
            "again",
            4
        )
        .await
        .expect("again"));
    assert_eq!(
        store.requests_in(request_state::STARTED).await.expect("in"),
        ["s-1"]
    );
    assert!(store.due_requests(10_000).await.expect("due").is_empty());
});

store_test!(
    signed_statements_and_refusals_are_kept_in_order_once,
    |store| {
        parked(&store, "r-1").await;
        let statement = |n: u8| pgrollout_shared::proto::SignedStatement {
            statement: vec![n],
            signature: vec![n, n],
            certificate: vec![0xc, n],
        };
        store
            .add_signed_statements("r-1", vec![statement(1), statement(2)], 2)
            .await
            .expect("add");
        store
            .add_signed_statements("r-1", vec![statement(3)], 3)
            .await
            .expect("add more");
        let kept = store.signed_statements("r-1").await.expect("read");
        assert_eq!(
            kept.iter().map(|s| s.statement[0]).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(store
            .record_agent_refusal("dev-1", "j-1", 1, 5, 6)
            .await
            .expect("refusal"));
        assert!(!store
            .record_agent_refusal("dev-1", "j-1", 1, 5, 7)
            .await
            .expect("again"));
    }
);

store_test!(
    fleet_claims_are_single_winners_across_controllers,
    |store, backend| {
        let fleet = FleetRecord {
            id: "f-1".into(),
            environment: "prod".into(),
            plan_id: "ab".repeat(32),
            actor: "alice".into(),
            trace_id: "t".into(),
            policy: fleet_policy::HALT.into(),
            state: fleet_state::HALTED.into(),
            created_at: 1,
        };
        let target = FleetTargetRow {
            position: 0,
            zone: "eu".into(),
            target: "db".into(),
            wave: 0,
            state: fleet_state::PENDING.into(),
            rollout_id: None,
            exit_code: None,
            message: String::new(),
        };
        store.create_fleet(&fleet, &[target]).await.expect("create");
        let other = backend.reopen();
        let (a, b) = tokio::join!(
            store.claim_fleet("f-1", "halted"),
            other.claim_fleet("f-1", "halted")
        );
        assert_eq!(
            usize::from(a.expect("claim")) + usize::from(b.expect("claim")),
            1,
            "one controller takes the fleet"
        );
    }
);

store_test!(
    signed_statements_added_at_once_all_keep_a_place,
    |store, backend| {
        parked(&store, "r-1").await;
        // Two controllers' requests arriving together for one request.
        let other = backend.reopen();
        let adds: Vec<_> = (0..8_u8)
            .map(|n| {
                let s = if n % 2 == 0 {
                    store.clone()
                } else {
                    other.clone()
                };
                let statement = pgrollout_shared::proto::SignedStatement {
                    statement: vec![n],
                    signature: vec![n],
                    certificate: vec![n],
                };
                tokio::spawn(
                    async move { s.add_signed_statements("r-1", vec![statement], 2).await },
                )
            })
            .collect();
        for add in adds {
            add.await.expect("task").expect("add");
        }
        let mut kept: Vec<u8> = store
            .signed_statements("r-1")
            .await
            .expect("read")
            .iter()
            .map(|s| s.statement[0])
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, (0..8).collect::<Vec<u8>>());
    }
);
