//! Appending to and reading the audit log. Each entry's hash covers its
//! content and the previous entry's hash; the first entry chains to 64 zeros.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// One thing that happened, by whom, to what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// Verified identity (`operator alice`, `agent dev/dev-1`) or `controller`.
    pub actor: String,
    /// e.g. `rollout.started`, `agent.rejected`, `auth.denied`, `config.reloaded`.
    pub action: String,
    /// `ok`, `refused`, `failed`, …
    pub outcome: String,
    pub rollout_id: Option<String>,
    pub environment: Option<String>,
    pub procedure: Option<String>,
    pub trace_id: Option<String>,
    /// Free text or JSON with the specifics; never a secret.
    pub details: String,
}

/// A stored entry with its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditEntry {
    pub seq: i64,
    pub at: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an entry: every field, length-prefixed, after the previous hash.
pub fn entry_hash(prev_hash: &str, at: i64, entry: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    let optional = |v: &Option<String>| v.clone().unwrap_or_default();
    for field in [
        prev_hash.to_owned(),
        at.to_string(),
        entry.actor.clone(),
        entry.action.clone(),
        entry.outcome.clone(),
        optional(&entry.rollout_id),
        optional(&entry.environment),
        optional(&entry.procedure),
        optional(&entry.trace_id),
        entry.details.clone(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn append(c: &mut Connection, entry: &AuditEntry, at: i64) -> rusqlite::Result<i64> {
    // IMMEDIATE: the read of the last hash and the insert are one step, so
    // two writers can never chain to the same predecessor.
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let prev: String = tx
        .query_row(
            "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    let hash = entry_hash(&prev, at, entry);
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, outcome, rollout_id, environment, procedure, trace_id, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            at,
            entry.actor,
            entry.action,
            entry.outcome,
            entry.rollout_id,
            entry.environment,
            entry.procedure,
            entry.trace_id,
            entry.details,
            prev,
            hash
        ],
    )?;
    let seq = tx.last_insert_rowid();
    tx.commit()?;
    Ok(seq)
}

impl Store {
    /// Appends an entry; returns its sequence number.
    pub async fn audit(&self, entry: AuditEntry) -> Result<i64, StoreError> {
        let entry = entry.escaped();
        let at = pgrollout_shared::job::now_unix_ms();
        self.call(move |c| append(c, &entry, at)).await
    }

    /// Every entry in order (the audit CLI and `verify` build on this).
    pub async fn audit_entries(&self) -> Result<Vec<StoredAuditEntry>, StoreError> {
        self.call(|c| {
            let mut statement = c.prepare(
                "SELECT seq, at, actor, action, outcome, rollout_id, environment, procedure, trace_id, details, prev_hash, hash
                 FROM audit_log ORDER BY seq",
            )?;
            let rows = statement.query_map([], |r| {
                Ok(StoredAuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    entry: AuditEntry {
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        outcome: r.get(4)?,
                        rollout_id: r.get(5)?,
                        environment: r.get(6)?,
                        procedure: r.get(7)?,
                        trace_id: r.get(8)?,
                        details: r.get(9)?,
                    },
                    prev_hash: r.get(10)?,
                    hash: r.get(11)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// Where the chain breaks: the first entry whose hash, predecessor or
/// sequence does not fit, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenChain {
    pub seq: i64,
    pub problem: String,
}

/// Checks every entry against its content and its predecessor. A deleted
/// entry shows as a gap in the sequence or a predecessor hash that does not
/// match; an edited one as a hash that does not match its content.
pub fn verify_chain(entries: &[StoredAuditEntry]) -> Result<(), BrokenChain> {
    let mut previous_hash = GENESIS_HASH.to_owned();
    let mut previous_seq = 0;
    for stored in entries {
        let broken = |problem: String| BrokenChain {
            seq: stored.seq,
            problem,
        };
        if stored.seq != previous_seq + 1 {
            return Err(broken(format!(
                "entry {} follows entry {previous_seq}: {} entr(ies) missing",
                stored.seq,
                stored.seq - previous_seq - 1
            )));
        }
        if stored.prev_hash != previous_hash {
            return Err(broken(format!(
                "entry {} does not chain to the entry before it",
                stored.seq
            )));
        }
        if entry_hash(&stored.prev_hash, stored.at, &stored.entry) != stored.hash {
            return Err(broken(format!(
                "entry {} was changed after it was written",
                stored.seq
            )));
        }
        previous_hash = stored.hash.clone();
        previous_seq = stored.seq;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_chain_to_their_predecessor() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.sqlite")).expect("open");
        for action in ["a", "b", "c"] {
            store
                .audit(AuditEntry {
                    actor: "operator alice".into(),
                    action: action.into(),
                    outcome: "ok".into(),
                    ..Default::default()
                })
                .await
                .expect("append");
        }
        let entries = store.audit_entries().await.expect("read");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].prev_hash, GENESIS_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        for e in &entries {
            assert_eq!(entry_hash(&e.prev_hash, e.at, &e.entry), e.hash);
        }
        assert_eq!(verify_chain(&entries), Ok(()));

        let mut edited = entries.clone();
        edited[1].entry.details = "rewritten".into();
        assert_eq!(verify_chain(&edited).map_err(|b| b.seq), Err(2));

        let mut deleted = entries.clone();
        deleted.remove(1);
        let broken = verify_chain(&deleted).expect_err("gap");
        assert_eq!(broken.seq, 3);
        assert!(broken.problem.contains("missing"), "{}", broken.problem);
    }
}
