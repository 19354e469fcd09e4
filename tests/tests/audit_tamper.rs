//! Someone who can write the controller's store file, but holds neither the
//! audit key nor the zones' databases, rewrites the audit log while the
//! controller is stopped (issue 13). `pgrollout audit verify` must name each
//! rewrite and exit 1: a forged entry with a recomputed hash, an actor
//! changed and the chain recomputed, a deleted tail with the sequence counter
//! reset, and a wiped log.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, Result};
use pgrollout_tests::{CommandOutput, Process, Stack};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

const READY: Duration = Duration::from_secs(30);

/// A stack with one deploy done: the dev ledger holds an anchor of the log
/// (the `deploy.started` entry), and verify says so.
async fn stack_with_an_anchor() -> Result<(Stack, i64)> {
    let stack = Stack::start(&["dev"]).await?;
    let deploy = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    let client = stack.zone("dev").pg.connect().await?;
    let row = client
        .query_one(
            "SELECT audit_seq, audit_hash FROM pgrollout.ledger ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?;
    let (anchor_seq, anchor_hash): (i64, String) = (row.get(0), row.get(1));
    let store = Connection::open(store_path(&stack))?;
    let (action, hash): (String, String) = store.query_row(
        "SELECT action, hash FROM audit_log WHERE seq = ?1",
        [anchor_seq],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!(
        action, "deploy.started",
        "the deploy carried the head as of its own entry"
    );
    assert_eq!(hash, anchor_hash, "the ledger holds the store's hash");

    // Only the controller's user may read or write the store and the key.
    for suffix in ["", "-wal", "-shm", ".audit-key"] {
        let path = stack.dir.path().join(format!("controller.sqlite{suffix}"));
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("{}", path.display()))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }

    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    assert!(verify.stdout.starts_with("audit log intact: "), "{verify}");
    assert!(
        verify.stdout.contains(&format!(
            "anchors: zone dev (environment dev, target main): checked, 1 anchor(s), newest entry {anchor_seq}"
        )),
        "{verify}"
    );
    Ok((stack, anchor_seq))
}

fn store_path(stack: &Stack) -> std::path::PathBuf {
    stack.dir.path().join("controller.sqlite")
}

/// Stops the controller (SIGKILL: nothing is flushed), lets `edit` change the
/// store, starts the controller again over it and waits for the agent.
async fn with_controller_stopped(
    stack: &mut Stack,
    edit: impl FnOnce(&Connection) -> Result<()>,
) -> Result<()> {
    let agent_mark = stack
        .zone("dev")
        .agent
        .as_ref()
        .context("dev agent")?
        .mark();
    stack.controller.kill_9()?;
    stack.controller.wait_for_exit(READY).await?;
    {
        let store = Connection::open(store_path(stack))?;
        edit(&store)?;
    }
    let config = stack.controller_config_path().to_string_lossy().to_string();
    stack.controller = Process::spawn(
        &stack.bins.controller,
        ["serve", "--config", &config],
        &[],
        "controller-after-tampering",
    )?;
    stack
        .controller
        .wait_for_line("controller listening", READY)
        .await?;
    stack
        .zone("dev")
        .agent
        .as_ref()
        .context("dev agent")?
        .wait_for_line_after(agent_mark, "connected to controller", READY)
        .await?;
    Ok(())
}

/// The entry hash as the controller computes it (store/audit.rs): every
/// field, length-prefixed, after the previous hash. Anyone can compute it.
fn entry_hash(prev: &str, at: i64, fields: &[Option<String>; 8]) -> String {
    let mut hasher = Sha256::new();
    let at = at.to_string();
    let all = [Some(prev.to_owned()), Some(at)]
        .into_iter()
        .chain(fields.iter().cloned());
    for field in all {
        let field = field.unwrap_or_default();
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

type Row = (i64, String, i64, [Option<String>; 8]);

fn rows_from(store: &Connection, from_seq: i64) -> Result<Vec<Row>> {
    let mut statement = store.prepare(
        "SELECT seq, prev_hash, at, actor, action, outcome, rollout_id, environment, procedure, trace_id, details
         FROM audit_log WHERE seq >= ?1 ORDER BY seq",
    )?;
    let rows = statement
        .query_map([from_seq], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                [
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ],
            ))
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    Ok(rows)
}

fn assert_broken(verify: &CommandOutput, expected: &str) {
    assert_eq!(verify.code, 1, "{verify}");
    assert!(
        verify.stdout.contains("audit log BROKEN at entry "),
        "{verify}"
    );
    assert!(verify.stdout.contains(expected), "{verify}");
}

/// The anchor at `anchor_seq` no longer matches: the log ends before it, or
/// a different entry now carries its number.
fn assert_anchor_broken(verify: &CommandOutput, anchor_seq: i64) {
    assert_eq!(verify.code, 1, "{verify}");
    assert!(
        verify
            .stdout
            .contains(&format!("audit log BROKEN at entry {anchor_seq}: "))
            && verify
                .stdout
                .contains("zone dev's ledger (target main, row #"),
        "{verify}"
    );
    assert!(
        verify.stdout.contains(&format!(
            "anchors entry {anchor_seq}, but the log ends at entry"
        )) && verify
            .stdout
            .contains("entries were deleted (a truncated tail or a wiped log)")
            || verify
                .stdout
                .contains(&format!("entry {anchor_seq} is not the entry "))
                && verify
                    .stdout
                    .contains("the log was rewritten at or before it"),
        "{verify}"
    );
}

#[tokio::test]
async fn a_forged_approval_with_a_recomputed_hash_is_detected() -> Result<()> {
    let (mut stack, _) = stack_with_an_anchor().await?;
    let mut forged_seq = 0;
    with_controller_stopped(&mut stack, |store| {
        let (last_hash, last_mac): (String, Option<String>) = store.query_row(
            "SELECT hash, mac FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let at = 1_900_000_000_000;
        let fields = [
            Some("approver-1".to_owned()),
            Some("approval.granted".to_owned()),
            Some("ok".to_owned()),
            Some("r-forged".to_owned()),
            Some("dev".to_owned()),
            Some("reconcilemupstream".to_owned()),
            None,
            Some("approved".to_owned()),
        ];
        let hash = entry_hash(&last_hash, at, &fields);
        // The last entry's code is copied too: it is all the forger has.
        store.execute(
            "INSERT INTO audit_log (at, actor, action, outcome, rollout_id, environment, procedure, trace_id, details, prev_hash, hash, mac)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![at, fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], fields[7], last_hash, hash, last_mac],
        )?;
        forged_seq = store.last_insert_rowid();
        Ok(())
    })
    .await?;
    stack
        .controller
        .wait_for_line("AUDIT LOG BROKEN", READY)
        .await
        .context("the controller warns at start-up")?;
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_broken(
        &verify,
        &format!(
            "entry {forged_seq} has an authentication code that does not match: it was written or rehashed \
             without the controller's audit key"
        ),
    );
    Ok(())
}

#[tokio::test]
async fn an_actor_changed_with_the_chain_recomputed_from_there_is_detected() -> Result<()> {
    let (mut stack, anchor_seq) = stack_with_an_anchor().await?;
    with_controller_stopped(&mut stack, |store| {
        let mut previous: Option<String> = None;
        for (seq, prev_hash, at, mut fields) in rows_from(store, anchor_seq)? {
            if seq == anchor_seq {
                fields[0] = Some("someone-else".to_owned());
            }
            let prev = previous.clone().unwrap_or(prev_hash);
            let hash = entry_hash(&prev, at, &fields);
            store.execute(
                "UPDATE audit_log SET actor = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                params![fields[0], prev, hash, seq],
            )?;
            previous = Some(hash);
        }
        Ok(())
    })
    .await?;
    stack
        .controller
        .wait_for_line("AUDIT LOG BROKEN", READY)
        .await
        .context("the controller warns at start-up")?;
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_broken(
        &verify,
        &format!("audit log BROKEN at entry {anchor_seq}: entry {anchor_seq} has an authentication code that does not match"),
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_tail_with_the_sequence_counter_reset_is_detected_by_the_zone_anchor(
) -> Result<()> {
    let (mut stack, anchor_seq) = stack_with_an_anchor().await?;
    with_controller_stopped(&mut stack, |store| {
        store.execute("DELETE FROM audit_log WHERE seq >= ?1", [anchor_seq])?;
        store.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'audit_log'",
            [anchor_seq - 1],
        )?;
        Ok(())
    })
    .await?;
    // What is left is a consistent, signed log (the restarted controller
    // may already have written new entries over the same numbers): only the
    // anchor can tell.
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_anchor_broken(&verify, anchor_seq);
    assert!(
        verify
            .stdout
            .contains("anchors: zone dev (environment dev, target main): checked"),
        "{verify}"
    );
    Ok(())
}

#[tokio::test]
async fn a_wiped_log_is_detected_by_the_zone_anchor() -> Result<()> {
    let (mut stack, anchor_seq) = stack_with_an_anchor().await?;
    with_controller_stopped(&mut stack, |store| {
        store.execute("DELETE FROM audit_log", [])?;
        store.execute("DELETE FROM sqlite_sequence WHERE name = 'audit_log'", [])?;
        Ok(())
    })
    .await?;
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_anchor_broken(&verify, anchor_seq);
    Ok(())
}
