//! The agent → controller registry and the jobs waiting for the controller
//! holding their agent (issue 18, item 2), the same on both backends.

use pgrollout_shared::proto::{JobEvent, JobOffer, Plan, StepStatus};

use crate::store::conformance::store_test;
use crate::store::{Delivery, NewRollout, Store, StreamTarget};

const DEAD_AFTER: i64 = 10_000;
const NOW: i64 = 1_000_000;

fn targets(names: &[&str]) -> Vec<StreamTarget> {
    names
        .iter()
        .map(|n| StreamTarget {
            name: (*n).to_owned(),
            ..StreamTarget::default()
        })
        .collect()
}

/// A deploy recorded by controller `a` for agent `dev-1`, its offer stored.
async fn recorded(store: &Store, rollout: &str, job: &str) {
    let plan = Plan {
        plan_id: "ab".repeat(32),
        label: "public.f".into(),
        ..Plan::default()
    };
    store.save_plan(&plan, 1).await.expect("plan");
    store
        .create_rollout(NewRollout::dev_deploy(rollout, &plan.plan_id, 1), job, 1)
        .await
        .expect("rollout");
    let offer = JobOffer {
        job_id: job.to_owned(),
        attempt: 1,
        ..JobOffer::default()
    };
    store
        .record_offer(job, 1, "dev-1", prost::Message::encode_to_vec(&offer))
        .await
        .expect("offer");
    store
        .request_delivery(
            &Delivery {
                job_id: job.to_owned(),
                attempt: 1,
                zone: "dev".into(),
                agent_name: "dev-1".into(),
            },
            "a",
            NOW,
        )
        .await
        .expect("delivery");
}

store_test!(
    the_newest_stream_of_an_agent_on_a_live_controller_is_the_one_found,
    |store| {
        store.register_controller("a", "a:1", NOW).await.expect("a");
        store.register_controller("b", "b:1", NOW).await.expect("b");
        store.register_controller("c", "c:1", NOW).await.expect("c");
        store
            .register_controller("dead", "d:1", NOW - 2 * DEAD_AFTER)
            .await
            .expect("dead");
        let find = |me: &'static str, target: &'static str| {
            let store = store.clone();
            async move {
                store
                    .remote_agent_stream("dev", target, me, NOW, DEAD_AFTER)
                    .await
                    .expect("find")
                    .map(|s| (s.controller_id, s.stream_epoch))
            }
        };
        assert_eq!(find("a", "main").await, None, "no stream recorded yet");

        let on_b = store
            .record_agent_stream("dev", "dev-1", "b", &targets(&["main", "other"]), NOW)
            .await
            .expect("b holds it");
        assert_eq!(on_b, 1);
        assert_eq!(find("a", "main").await, Some(("b".into(), 1)));
        assert_eq!(find("a", "other").await, Some(("b".into(), 1)));
        assert_eq!(find("a", "mai").await, None, "targets match whole");
        assert_eq!(
            find("b", "main").await,
            None,
            "its own streams are not remote"
        );

        // The agent moves to C; B's late disconnect does not hide it.
        let on_c = store
            .record_agent_stream("dev", "dev-1", "c", &targets(&["main"]), NOW + 1)
            .await
            .expect("c holds it");
        assert_eq!(on_c, 2, "a newer epoch");
        assert!(!store
            .end_agent_stream("dev", "dev-1", on_b)
            .await
            .expect("b's end"));
        assert_eq!(find("a", "main").await, Some(("c".into(), 2)));
        assert!(store
            .end_agent_stream("dev", "dev-1", on_c)
            .await
            .expect("c's end"));
        assert_eq!(find("a", "main").await, None, "disconnected");

        // A stream held by a dead controller is ignored.
        store
            .record_agent_stream("dev", "dev-2", "dead", &targets(&["main"]), NOW)
            .await
            .expect("dead holds one");
        assert_eq!(find("a", "main").await, None, "its controller is dead");

        // A stream recorded by a controller's previous life is not held by
        // it once it restarted under the same id.
        store
            .record_agent_stream("dev", "dev-3", "b", &targets(&["main"]), NOW)
            .await
            .expect("b holds one");
        assert_eq!(find("a", "main").await, Some(("b".into(), 1)));
        store
            .register_controller("b", "b:1", NOW + 5)
            .await
            .expect("b restarted");
        assert_eq!(find("a", "main").await, None, "b restarted since");
    }
);

store_test!(
    a_waiting_job_is_taken_by_one_controller_and_offered_once,
    |store, backend| {
        recorded(&store, "r-1", "j-1").await;
        let waiting = store.waiting_deliveries().await.expect("waiting");
        assert_eq!(
            waiting,
            vec![Delivery {
                job_id: "j-1".into(),
                attempt: 1,
                zone: "dev".into(),
                agent_name: "dev-1".into(),
            }]
        );
        // Two controllers (two stores on one database) race for it.
        let other = backend.reopen();
        let (b, c) = tokio::join!(
            store.take_delivery("j-1", 1, "b", NOW),
            other.take_delivery("j-1", 1, "c", NOW)
        );
        let taken: Vec<JobOffer> = [b.expect("b"), c.expect("c")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(taken.len(), 1, "offered once");
        assert_eq!(taken[0].job_id, "j-1", "the offer as recorded");
        assert!(store
            .waiting_deliveries()
            .await
            .expect("waiting")
            .is_empty());
        assert!(
            !store.withdraw_delivery("j-1", 1).await.expect("withdraw"),
            "already taken"
        );
    }
);

store_test!(a_withdrawn_or_settled_job_is_never_taken, |store| {
    recorded(&store, "r-1", "j-1").await;
    assert!(store.withdraw_delivery("j-1", 1).await.expect("withdraw"));
    assert_eq!(
        store.take_delivery("j-1", 1, "b", NOW).await.expect("take"),
        None
    );

    recorded(&store, "r-2", "j-2").await;
    store
        .abandon_job("j-2", 1, "failed", 2, "not accepted in time", NOW)
        .await
        .expect("settled");
    assert!(store
        .waiting_deliveries()
        .await
        .expect("waiting")
        .is_empty());
    assert_eq!(
        store.take_delivery("j-2", 1, "b", NOW).await.expect("take"),
        None
    );
});

store_test!(
    the_requester_reads_claim_events_and_decline_from_the_store,
    |store| {
        recorded(&store, "r-1", "j-1").await;
        let progress = store.job_progress("j-1", 1, 0).await.expect("progress");
        assert!(!progress.accepted && progress.events.is_empty() && progress.result.is_none());

        assert!(store
            .claim_job("j-1", 1, "dev-1", "dev", NOW)
            .await
            .expect("claim"));
        for seq in 1..=3 {
            let event = JobEvent {
                job_id: "j-1".into(),
                attempt: 1,
                seq,
                step: format!("step-{seq}"),
                status: StepStatus::Succeeded as i32,
                message: "ok".into(),
                duration_ms: 5,
                at_unix_ms: NOW,
                ..JobEvent::default()
            };
            assert!(store.record_event(&event).await.expect("event"));
        }
        let progress = store.job_progress("j-1", 1, 1).await.expect("progress");
        assert!(progress.accepted);
        let seqs: Vec<u64> = progress.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3], "only the events after the one asked");
        assert_eq!(progress.events[0].step, "step-2");
        assert_eq!(progress.events[0].status, StepStatus::Succeeded as i32);
        assert_eq!(progress.declined, None);

        let result = pgrollout_shared::proto::JobResult {
            job_id: "j-1".into(),
            attempt: 1,
            seq: 4,
            outcome: pgrollout_shared::proto::Outcome::Succeeded as i32,
            message: "deployed".into(),
            ..Default::default()
        };
        let reported = crate::domain::agent_report::ReportedResult::try_from(result.clone())
            .expect("a well-formed result");
        assert!(store.finish_job(&reported, NOW).await.expect("finish"));
        let progress = store.job_progress("j-1", 1, 3).await.expect("progress");
        assert!(progress.events.is_empty());
        assert_eq!(
            progress.result,
            Some(result),
            "the result as the agent wrote it"
        );

        assert!(store
            .record_delivery_declined("j-1", 1, "busy")
            .await
            .expect("decline"));
        let progress = store.job_progress("j-1", 1, 3).await.expect("progress");
        assert_eq!(progress.declined.as_deref(), Some("busy"));
        assert!(
            !store
                .record_delivery_declined("j-9", 1, "busy")
                .await
                .expect("not a delivery"),
            "a job that was not delivered has no row to mark"
        );
    }
);

store_test!(
    a_retry_records_the_next_attempt_and_it_waits_for_the_holder,
    |store| {
        recorded(&store, "r-1", "j-1").await;
        assert!(store.withdraw_delivery("j-1", 1).await.expect("withdraw"));
        store
            .abandon_job("j-1", 1, "unknown", 2, "agent lost mid-job", NOW)
            .await
            .expect("in doubt");
        let offer = JobOffer {
            job_id: "j-1".into(),
            attempt: 2,
            ..JobOffer::default()
        };
        // `pgrollout retry`: attempt 2 of the same job, offered afresh.
        store
            .new_attempt(
                "r-1",
                "j-1",
                2,
                "dev-1",
                prost::Message::encode_to_vec(&offer),
                NOW + 1,
            )
            .await
            .expect("new attempt");
        let latest = store.latest_job("r-1").await.expect("read").expect("a job");
        assert_eq!(
            (latest.attempt, latest.rollout_state.as_str()),
            (2, "running")
        );
        store
            .request_delivery(
                &Delivery {
                    job_id: "j-1".into(),
                    attempt: 2,
                    zone: "dev".into(),
                    agent_name: "dev-1".into(),
                },
                "a",
                NOW + 1,
            )
            .await
            .expect("delivery");
        let taken = store
            .take_delivery("j-1", 2, "b", NOW + 2)
            .await
            .expect("take")
            .expect("attempt 2 is offered");
        assert_eq!(taken.attempt, 2, "the new attempt's offer");
    }
);

store_test!(
    fleet_selection_reads_every_live_controllers_agents_with_their_labels,
    |store| {
        store.register_controller("a", "a:1", NOW).await.expect("a");
        store.register_controller("b", "b:1", NOW).await.expect("b");
        store
            .register_controller("dead", "d:1", NOW - 2 * DEAD_AFTER)
            .await
            .expect("dead");
        let prod = std::collections::BTreeMap::from([("tier".to_owned(), "prod".to_owned())]);
        let announced = vec![
            StreamTarget {
                name: "db1".into(),
                labels: prod.clone(),
            },
            StreamTarget {
                name: "scratch".into(),
                ..StreamTarget::default()
            },
        ];
        store
            .record_agent_stream("prod-eu", "eu-1", "b", &announced, NOW)
            .await
            .expect("b holds eu-1");
        store
            .record_agent_stream("prod-us", "us-1", "a", &targets(&["db2"]), NOW)
            .await
            .expect("a holds us-1");
        store
            .record_agent_stream("prod-ap", "ap-1", "dead", &targets(&["db3"]), NOW)
            .await
            .expect("dead holds ap-1");
        let seen = store
            .live_agent_streams("a", NOW, DEAD_AFTER)
            .await
            .expect("live streams");
        assert_eq!(seen.len(), 1, "not a's own, not the dead one's: {seen:?}");
        assert_eq!(
            (seen[0].zone.as_str(), seen[0].agent_name.as_str()),
            ("prod-eu", "eu-1")
        );
        assert_eq!(seen[0].controller_id, "b");
        assert_eq!(seen[0].targets, announced, "names and labels as announced");
        let from_b = store
            .live_agent_streams("b", NOW, DEAD_AFTER)
            .await
            .expect("live streams");
        assert_eq!(from_b.len(), 1);
        assert_eq!(from_b[0].targets, targets(&["db2"]));
    }
);

store_test!(
    a_followed_jobs_events_keep_smoke_reports_and_progress_and_each_change_is_announced,
    |store| {
        // PostgreSQL announces each change of a job's progress; SQLite has
        // no follower from afar and nothing to listen on.
        let mut announced = store
            .listen_for_progress()
            .await
            .map(|listening| listening.expect("listen"));
        recorded(&store, "r-1", "j-1").await;
        assert!(store
            .claim_job("j-1", 1, "dev-1", "dev", NOW)
            .await
            .expect("claim"));
        let smoke = pgrollout_shared::proto::SmokeReport {
            routine: "public.f()".into(),
            test: "answers".into(),
            phase: "in-transaction".into(),
            passed: true,
            ..Default::default()
        };
        let events = [
            JobEvent {
                job_id: "j-1".into(),
                attempt: 1,
                seq: 1,
                step: "apply".into(),
                status: StepStatus::Started as i32,
                done: 1,
                total: 2,
                at_unix_ms: NOW,
                ..JobEvent::default()
            },
            JobEvent {
                job_id: "j-1".into(),
                attempt: 1,
                seq: 2,
                step: "smoke".into(),
                status: StepStatus::Succeeded as i32,
                message: "1 smoke test(s) passed".into(),
                smoke: vec![smoke.clone()],
                at_unix_ms: NOW,
                ..JobEvent::default()
            },
        ];
        for event in &events {
            assert!(store.record_event(event).await.expect("event"));
        }
        let progress = store.job_progress("j-1", 1, 0).await.expect("progress");
        assert_eq!(
            progress.events,
            events.to_vec(),
            "each event as the agent sent it, progress and smoke reports included"
        );
        for what in ["the claim", "an event", "another event"] {
            heard(&mut announced, what).await;
        }
        assert!(store
            .record_delivery_declined("j-1", 1, "busy")
            .await
            .expect("decline"));
        heard(&mut announced, "the decline").await;
    }
);

/// Awaits the next announcement of job `j-1`'s progress, when listening.
async fn heard(announced: &mut Option<tokio::sync::mpsc::UnboundedReceiver<String>>, what: &str) {
    let Some(notes) = announced.as_mut() else {
        return;
    };
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), notes.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} not announced"));
    assert_eq!(note.as_deref(), Some("j-1"), "{what} announced");
}
