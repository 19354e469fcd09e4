//! The audit chain on both backends: appended, verified, tamper evident,
//! and never forked by writers appending at once.

use crate::store::conformance::store_test;
use crate::store::AuditEntry;

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        actor: "operator alice".into(),
        action: action.into(),
        outcome: "ok".into(),
        ..Default::default()
    }
}

store_test!(
    concurrent_appenders_never_fork_the_chain,
    |store, backend| {
        // Two controllers' worth of writers: two stores on one database, each
        // with its own connections, appending at once.
        let other = backend.reopen();
        let mut tasks = Vec::new();
        for n in 0..40 {
            let writer = if n % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                writer.audit(entry(&format!("a{n}"))).await
            }));
        }
        for task in tasks {
            task.await.expect("task").expect("append");
        }
        let entries = store.audit_entries().await.expect("read");
        // The key's creation, then 40 appends; every entry chains to the one
        // before it, so none shares a predecessor.
        assert_eq!(entries.len(), 41);
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].prev_hash, pair[0].hash,
                "entry {} forks the chain",
                pair[1].seq
            );
        }
        assert_eq!(store.verify_audit(&entries), Ok(()));
        let verdict = store
            .verify_audit_log(vec![entries[5].seq])
            .await
            .expect("verify");
        assert_eq!(verdict.entries, 41);
        assert_eq!(verdict.chain, Ok(()));
        assert_eq!(verdict.hashes.get(&entries[5].seq), Some(&entries[5].hash));
    }
);

store_test!(
    a_tampered_entry_in_the_database_is_found,
    |store, backend| {
        for action in ["a", "b", "c"] {
            store.audit(entry(action)).await.expect("append");
        }
        let victim = store.audit_entries().await.expect("read")[2].seq;
        // Someone with write access to the store rewrites an entry in place.
        store
            .call(move |c| {
                c.execute(
                    "UPDATE audit_log SET details = 'rewritten' WHERE seq = ?1",
                    crate::store::db::params![victim],
                )
            })
            .await
            .expect("tamper");
        let verdict = store.verify_audit_log(Vec::new()).await.expect("verify");
        assert_eq!(verdict.chain.map_err(|broken| broken.seq), Err(victim));
        // A second controller on the same store sees the same.
        let verdict = backend
            .reopen()
            .verify_audit_log(Vec::new())
            .await
            .expect("verify");
        assert!(verdict.chain.is_err());
    }
);

store_test!(
    audit_entries_are_found_by_time_rollout_and_procedure,
    |store| {
        let mut tagged = entry("deploy");
        tagged.rollout_id = Some("r-7".into());
        tagged.procedure = Some("public.f(integer)".into());
        store.audit(entry("other")).await.expect("append");
        store.audit(tagged).await.expect("append");
        let found = store
            .audit_entries_matching(0, "r-7", "public.f(integer)")
            .await
            .expect("matching");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].entry.action, "deploy");
        assert_eq!(
            store
                .audit_entries_matching(i64::MAX / 2, "", "")
                .await
                .expect("since")
                .len(),
            0
        );
        let head = store.audit_head().await.expect("head").expect("some");
        assert_eq!(
            head.hash,
            store
                .audit_entries()
                .await
                .expect("read")
                .last()
                .expect("last")
                .hash
        );
    }
);

store_test!(a_log_longer_than_a_page_verifies_whole, |store| {
    let entries: Vec<(i64, AuditEntry)> =
        (0..2_500).map(|n| (n, entry(&format!("e{n}")))).collect();
    store.audit_batch(entries).await.expect("append");
    let all = store.audit_entries().await.expect("read");
    let verdict = store
        .verify_audit_log(vec![all[1_500].seq])
        .await
        .expect("verify");
    assert_eq!(
        verdict.entries, 2_501,
        "the key's creation and 2,500 entries"
    );
    assert_eq!(verdict.last_seq, all.last().expect("last").seq);
    assert_eq!(verdict.chain, Ok(()));
    assert_eq!(verdict.hashes.get(&all[1_500].seq), Some(&all[1_500].hash));
    // A change past the first page is still found.
    let victim = all[2_200].seq;
    store
        .call(move |c| {
            c.execute(
                "UPDATE audit_log SET actor = 'someone-else' WHERE seq = ?1",
                crate::store::db::params![victim],
            )
        })
        .await
        .expect("tamper");
    let verdict = store.verify_audit_log(Vec::new()).await.expect("verify");
    assert_eq!(verdict.chain.map_err(|broken| broken.seq), Err(victim));
});
