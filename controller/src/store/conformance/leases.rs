//! Leases and fencing tokens (issue 18, item 2), the same on both backends:
//! a lease is held by one controller at a time, its token grows with every
//! change of holder, and a write carrying a stale token is refused.

use crate::store::conformance::requests::parked;
use crate::store::conformance::store_test;
use crate::store::leases::singleton::SCHEDULER;
use crate::store::request_state;

const LEASE: i64 = 10_000;
const NOW: i64 = 1_000_000;

store_test!(
    a_lease_has_one_holder_and_its_token_grows_with_each_takeover,
    |store| {
        let a = store
            .acquire_lease(SCHEDULER, "a", 1, NOW, NOW + LEASE, false)
            .await
            .expect("a takes it")
            .expect("free");
        assert_eq!(a.token, 1);
        assert_eq!(
            store
                .acquire_lease(SCHEDULER, "b", 1, NOW + 1, NOW + 1 + LEASE, false)
                .await
                .expect("b asks"),
            None,
            "held and not expired: refused"
        );
        let renewed = store
            .acquire_lease(SCHEDULER, "a", 1, NOW + 2_000, NOW + 2_000 + LEASE, false)
            .await
            .expect("a renews")
            .expect("its own");
        assert_eq!(renewed, a, "a renewal keeps the token");

        // Expired: b takes it over, under a new token.
        let later = NOW + 2_000 + LEASE + 1;
        let b = store
            .acquire_lease(SCHEDULER, "b", 1, later, later + LEASE, false)
            .await
            .expect("b asks")
            .expect("expired");
        assert_eq!(b.token, 2);
        assert_eq!(
            store
                .acquire_lease(SCHEDULER, "a", 1, later, later + LEASE, false)
                .await
                .expect("a asks again"),
            None,
            "the ex-leader cannot renew what it lost"
        );
        // b restarted (a new epoch): its new life takes over at once, as a new
        // holder; its old life cannot take it back.
        let b2 = store
            .acquire_lease(SCHEDULER, "b", 2, later + 1, later + 1 + LEASE, false)
            .await
            .expect("b's new life")
            .expect("its previous life's");
        assert_eq!(b2.token, 3);
        assert_eq!(
            store
                .acquire_lease(SCHEDULER, "b", 1, later + 2, later + 2 + LEASE, false)
                .await
                .expect("b's old life"),
            None
        );
        // Released on a clean stop: another takes it without waiting.
        store.release_lease(&b2).await.expect("release");
        let c = store
            .acquire_lease(SCHEDULER, "c", 1, later + 3, later + 3 + LEASE, false)
            .await
            .expect("c asks")
            .expect("released");
        assert_eq!(c.token, 4);
        let row = store.lease(SCHEDULER).await.expect("read").expect("row");
        assert_eq!((row.holder.as_str(), row.token), ("c", 4));
        // Other leases are apart.
        assert_eq!(
            store
                .acquire_lease("retention", "a", 1, later, later + LEASE, false)
                .await
                .expect("other")
                .map(|f| f.token),
            Some(1)
        );
        // A sole controller's store (SQLite): another holder is a dead
        // process's, taken over at once, under a new token.
        assert_eq!(
            store
                .acquire_lease("retention", "z", 1, later, later + LEASE, true)
                .await
                .expect("sole")
                .map(|f| f.token),
            Some(2)
        );
    }
);

store_test!(a_write_carrying_a_stale_fencing_token_is_refused, |store| {
    parked(&store, "r-1").await;
    parked(&store, "r-2").await;
    for id in ["r-1", "r-2"] {
        assert!(store
            .move_request(
                id,
                &[request_state::AWAITING_APPROVAL],
                request_state::SCHEDULED,
                None,
                "",
                NOW
            )
            .await
            .expect("schedule"));
    }
    let old = store
        .acquire_lease(SCHEDULER, "a", 1, NOW, NOW + LEASE, false)
        .await
        .expect("a")
        .expect("free");
    // a is paused past its lease; b takes over.
    let later = NOW + LEASE + 1;
    let new = store
        .acquire_lease(SCHEDULER, "b", 1, later, later + LEASE, false)
        .await
        .expect("b")
        .expect("expired");

    // a wakes and writes with its old token: every fenced write is refused
    // and changes nothing.
    assert!(!store
        .claim_request_start(
            "r-1",
            &[request_state::SCHEDULED],
            Some("a"),
            Some(&old),
            later
        )
        .await
        .expect("stale claim"));
    assert!(!store
        .reschedule_request_fenced(
            "r-1",
            &[request_state::SCHEDULED],
            later + 5,
            "w",
            "stale",
            Some(&old)
        )
        .await
        .expect("stale reschedule"));
    assert!(!store
        .move_request_fenced(
            "r-1",
            &[request_state::SCHEDULED],
            request_state::REFUSED,
            None,
            "stale",
            later,
            Some(&old)
        )
        .await
        .expect("stale refusal"));
    let r1 = store
        .pending_rollout("r-1")
        .await
        .expect("read")
        .expect("r-1");
    assert_eq!(r1.state, request_state::SCHEDULED, "untouched");

    // The new leader's writes, with the current token, go through.
    assert!(store
        .claim_request_start(
            "r-1",
            &[request_state::SCHEDULED],
            Some("b"),
            Some(&new),
            later
        )
        .await
        .expect("claim"));
    assert!(store
        .move_request_fenced(
            "r-2",
            &[request_state::SCHEDULED],
            request_state::REFUSED,
            None,
            "a gate refused it",
            later,
            Some(&new)
        )
        .await
        .expect("refusal"));
    let r1 = store
        .pending_rollout("r-1")
        .await
        .expect("read")
        .expect("r-1");
    assert_eq!(r1.state, request_state::STARTING);
});
