//! Side-channel jobs (a watch's sample, a drift scan, the audit anchors'
//! read) waiting for the controller holding their agent (issue 18, item 2;
//! migration 0022), the same on both backends: taken once, answered once,
//! withdrawn or expired never taken.

use pgrollout_shared::proto::{JobOffer, JobResult, Outcome};

use crate::store::conformance::store_test;
use crate::store::{SideAnswer, SideDelivery, Store};

const NOW: i64 = 1_000_000;
const EXPIRES: i64 = NOW + 60_000;

/// Side-channel job `job` recorded by controller `a` for agent `dev/dev-1`.
async fn requested(store: &Store, job: &str, expires_at: i64) {
    let offer = JobOffer {
        job_id: job.to_owned(),
        attempt: 1,
        target: "main".into(),
        ..JobOffer::default()
    };
    store
        .request_side_delivery(
            &SideDelivery {
                job_id: job.to_owned(),
                zone: "dev".into(),
                agent_name: "dev-1".into(),
            },
            prost::Message::encode_to_vec(&offer),
            "a",
            NOW,
            expires_at,
        )
        .await
        .expect("requested");
}

store_test!(
    a_side_job_is_taken_by_one_controller_and_answered_once,
    |store, backend| {
        requested(&store, "drift-1", EXPIRES).await;
        assert_eq!(
            store.waiting_side_deliveries(NOW).await.expect("waiting"),
            vec![SideDelivery {
                job_id: "drift-1".into(),
                zone: "dev".into(),
                agent_name: "dev-1".into(),
            }]
        );
        // Two controllers (two stores on one database) race for it.
        let other = backend.reopen();
        let (b, c) = tokio::join!(
            store.take_side_delivery("drift-1", "b", NOW + 1),
            other.take_side_delivery("drift-1", "c", NOW + 1)
        );
        let taken: Vec<JobOffer> = [b.expect("b"), c.expect("c")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(taken.len(), 1, "offered once");
        assert_eq!(taken[0].job_id, "drift-1");
        assert_eq!(taken[0].target, "main", "the offer as recorded");
        assert!(store
            .waiting_side_deliveries(NOW + 1)
            .await
            .expect("waiting")
            .is_empty());
        assert_eq!(store.side_answer("drift-1").await.expect("read"), None);

        let result = JobResult {
            job_id: "drift-1".into(),
            attempt: 1,
            seq: 2,
            outcome: Outcome::Succeeded as i32,
            message: "scanned".into(),
            ..JobResult::default()
        };
        assert!(store
            .record_side_answer("drift-1", &SideAnswer::Result(Box::new(result.clone())))
            .await
            .expect("answer"));
        assert!(
            !store
                .record_side_answer("drift-1", &SideAnswer::Declined("late".into()))
                .await
                .expect("second answer"),
            "an answer is written once"
        );
        assert_eq!(
            store.side_answer("drift-1").await.expect("read"),
            Some(SideAnswer::Result(Box::new(result))),
            "the result as the agent wrote it"
        );
        assert!(
            !store.end_side_delivery("drift-1").await.expect("end"),
            "it had been taken"
        );
        assert_eq!(store.side_answer("drift-1").await.expect("read"), None);
    }
);

store_test!(a_withdrawn_or_expired_side_job_is_never_taken, |store| {
    requested(&store, "aa-1", EXPIRES).await;
    assert!(
        store.end_side_delivery("aa-1").await.expect("withdraw"),
        "withdrawn before anyone took it"
    );
    assert_eq!(
        store
            .take_side_delivery("aa-1", "b", NOW)
            .await
            .expect("take"),
        None
    );
    assert!(
        !store
            .record_side_answer("aa-1", &SideAnswer::Failed("gone".into()))
            .await
            .expect("answer"),
        "nobody waits for it any more"
    );

    requested(&store, "ws-1", NOW + 10).await;
    assert!(store
        .waiting_side_deliveries(NOW + 10)
        .await
        .expect("waiting")
        .is_empty());
    assert_eq!(
        store
            .take_side_delivery("ws-1", "b", NOW + 10)
            .await
            .expect("take"),
        None,
        "expired"
    );
    // The holder's reasons reach the requester as written.
    requested(&store, "ws-2", EXPIRES).await;
    assert!(store
        .take_side_delivery("ws-2", "b", NOW)
        .await
        .expect("take")
        .is_some());
    assert!(store
        .record_side_answer("ws-2", &SideAnswer::Declined("busy".into()))
        .await
        .expect("answer"));
    assert_eq!(
        store.side_answer("ws-2").await.expect("read"),
        Some(SideAnswer::Declined("busy".into()))
    );
    // An hour past its expiry, a row nobody read is deleted.
    store
        .waiting_side_deliveries(EXPIRES + 3_600_001)
        .await
        .expect("waiting");
    assert_eq!(store.side_answer("ws-2").await.expect("read"), None);
});
