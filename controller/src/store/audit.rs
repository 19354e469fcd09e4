//! Appending to and reading the audit log. Each entry's hash covers its
//! content and the previous entry's hash; the first entry chains to 64 zeros.
//! Each entry's `mac` authenticates its sequence number and hash with a key
//! kept outside the store (`audit_key.rs`), so a chain recomputed by someone
//! who can only write the store file does not verify.

use std::path::Path;

use super::db::{self, params, Conn, OptionalExtension, Value};
pub use pgrollout_shared::audit_anchor::AuditHead;
use sha2::{Digest, Sha256};

use super::audit_key::AuditKey;
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
    /// HMAC of seq and hash; `None` for an entry nobody signed.
    pub mac: Option<String>,
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an entry: every field, length-prefixed, after the previous hash.
/// Fed from borrowed fields: `audit verify` runs it once per entry of the whole
/// log, so it copies no field.
pub fn entry_hash(prev_hash: &str, at: i64, entry: &AuditEntry) -> String {
    fn optional(value: &Option<String>) -> &str {
        value.as_deref().unwrap_or_default()
    }
    let mut hasher = Sha256::new();
    let at = at.to_string();
    for field in [
        prev_hash,
        at.as_str(),
        entry.actor.as_str(),
        entry.action.as_str(),
        entry.outcome.as_str(),
        optional(&entry.rollout_id),
        optional(&entry.environment),
        optional(&entry.procedure),
        optional(&entry.trace_id),
        entry.details.as_str(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn append(c: &mut Conn, key: &AuditKey, entry: &AuditEntry, at: i64) -> db::Result<i64> {
    // IMMEDIATE: the read of the last hash and the insert are one step, so
    // two writers can never chain to the same predecessor.
    let tx = c.immediate_transaction()?;
    let seq = append_in(&tx, key, entry, at)?;
    tx.commit()?;
    Ok(seq)
}

/// The advisory lock key that serialises audit appends on PostgreSQL
/// ("pgrollou" in ASCII: no other lock of this database is likely to take it).
const AUDIT_CHAIN_LOCK: i64 = 0x7067_726f_6c6c_6f75;

fn append_in(
    tx: &db::Transaction<'_>,
    key: &AuditKey,
    entry: &AuditEntry,
    at: i64,
) -> db::Result<i64> {
    // Writers on several connections (and, later, several controllers)
    // queue here until the appender before them commits: the read of the
    // last hash and the insert are one step, so the chain never forks.
    tx.serialise(AUDIT_CHAIN_LOCK)?;
    let prev: String = tx
        .query_row(
            "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            params![],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    let hash = entry_hash(&prev, at, entry);
    let seq: i64 = tx.query_row(
        "INSERT INTO audit_log (at, actor, action, outcome, rollout_id, environment, procedure, trace_id, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         RETURNING seq",
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
        |row| row.get(0),
    )?;
    // The sequence number is only known once inserted (AUTOINCREMENT, so a
    // deleted tail leaves a gap), and the code covers it.
    tx.execute(
        "UPDATE audit_log SET mac = ?1 WHERE seq = ?2",
        params![key.mac(seq, &hash), seq],
    )?;
    Ok(seq)
}

/// Opens the audit key, creating it on the first start that has none. A store
/// written before entries were authenticated has unsigned entries: they are
/// signed now when their chain is intact (and only when the key is new, so an
/// entry stripped of its code later is never signed again), and the adoption
/// is itself an audit entry.
pub(super) fn open_key(c: &mut Conn, key_path: &Path) -> Result<AuditKey, StoreError> {
    let (signed, unsigned): (i64, i64) = c.query_row(
        "SELECT count(mac), count(*) - count(mac) FROM audit_log",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let opened = AuditKey::open_or_create(key_path, signed)?;
    let key = opened.key;
    if !opened.created {
        return Ok(key);
    }
    let mut details = format!("audit key {} created", key.path().display());
    if unsigned > 0 {
        let entries = read_entries(c)?;
        match verify_hash_chain(&entries) {
            Ok(()) => {
                let tx = c.transaction()?;
                for stored in &entries {
                    tx.execute(
                        "UPDATE audit_log SET mac = ?1 WHERE seq = ?2",
                        params![key.mac(stored.seq, &stored.hash), stored.seq],
                    )?;
                }
                tx.commit()?;
                tracing::warn!(
                    entries = unsigned,
                    key = %key.path().display(),
                    "audit entries written before entries were authenticated were signed now: \
                     before this start their integrity rests on the hash chain alone"
                );
                details.push_str(&format!(
                    "; {unsigned} earlier entries, whose hash chain was intact, signed with it"
                ));
            }
            Err(broken) => {
                tracing::error!(
                    seq = broken.seq,
                    problem = %broken.problem,
                    "AUDIT LOG BROKEN: earlier entries were not signed because their hash chain does not verify"
                );
                details.push_str(&format!(
                    "; {unsigned} earlier entries left unsigned: their chain is broken at entry {} ({})",
                    broken.seq, broken.problem
                ));
            }
        }
    }
    let entry = AuditEntry {
        actor: "controller".into(),
        action: "audit.key_created".into(),
        outcome: "ok".into(),
        details,
        ..Default::default()
    };
    append(c, &key, &entry, pgrollout_shared::job::now_unix_ms())?;
    Ok(key)
}

/// Entries `verify_audit_log` holds in memory at once.
const VERIFY_PAGE: usize = 1000;

const SELECT_ENTRIES: &str = "SELECT seq, at, actor, action, outcome, rollout_id, environment, procedure, trace_id, details, prev_hash, hash, mac
         FROM audit_log";

fn read_entries(c: &Conn) -> db::Result<Vec<StoredAuditEntry>> {
    let mut statement = c.prepare(&format!("{SELECT_ENTRIES} ORDER BY seq"))?;
    let rows = statement.query_map(params![], stored_entry)?;
    rows.collect()
}

fn stored_entry(r: &db::Row) -> db::Result<StoredAuditEntry> {
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
        mac: r.get(12)?,
    })
}

impl Store {
    /// Appends an entry; returns its sequence number.
    pub async fn audit(&self, entry: AuditEntry) -> Result<i64, StoreError> {
        let entry = entry.escaped();
        let at = pgrollout_shared::job::now_unix_ms();
        let key = self.audit_key.clone();
        self.call(move |c| append(c, &key, &entry, at)).await
    }

    /// Appends entries with their own times, in order, in one transaction
    /// (`store-fill`'s synthetic history): the same chain and codes as
    /// [`Store::audit`].
    pub async fn audit_batch(&self, entries: Vec<(i64, AuditEntry)>) -> Result<(), StoreError> {
        let key = self.audit_key.clone();
        self.call(move |c| {
            let tx = c.immediate_transaction()?;
            for (at, entry) in entries {
                append_in(&tx, &key, &entry.escaped(), at)?;
            }
            tx.commit()
        })
        .await
    }

    /// Every entry in order (tests read the log with it).
    #[cfg(test)]
    pub async fn audit_entries(&self) -> Result<Vec<StoredAuditEntry>, StoreError> {
        self.call(|c| read_entries(c)).await
    }

    /// The newest entry, `None` while the log is empty: what a job carries
    /// to its zone as an anchor.
    pub async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.call(|c| {
            c.query_row(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                params![],
                |r| {
                    Ok(AuditHead {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Checks every entry's chain and authentication code (`verify_chain`).
    #[cfg(test)]
    pub fn verify_audit(&self, entries: &[StoredAuditEntry]) -> Result<(), BrokenChain> {
        verify_chain(entries, &self.audit_key)
    }
}

/// Where the chain breaks: the first entry whose hash, predecessor or
/// sequence does not fit, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenChain {
    pub seq: i64,
    pub problem: String,
}

/// Checks every entry against its content, its predecessor and its
/// authentication code. A deleted entry shows as a gap in the sequence or a
/// predecessor hash that does not match; an edited one as a hash that does
/// not match its content; an entry written or rehashed without the audit key
/// as a missing or wrong code.
#[cfg(test)]
pub fn verify_chain(entries: &[StoredAuditEntry], key: &AuditKey) -> Result<(), BrokenChain> {
    check_chain(entries, Some(key))
}

/// The hash chain alone: sequence, predecessor, content.
fn verify_hash_chain(entries: &[StoredAuditEntry]) -> Result<(), BrokenChain> {
    check_chain(entries, None)
}

fn check_chain(entries: &[StoredAuditEntry], key: Option<&AuditKey>) -> Result<(), BrokenChain> {
    let mut check = ChainCheck::new(key);
    entries.iter().try_for_each(|stored| check.push(stored))
}

/// The chain checked one entry at a time, so a log of any length is checked
/// in constant memory (`Store::verify_audit_log`).
struct ChainCheck<'k> {
    key: Option<&'k AuditKey>,
    previous_hash: String,
    previous_seq: i64,
}

impl<'k> ChainCheck<'k> {
    fn new(key: Option<&'k AuditKey>) -> Self {
        ChainCheck {
            key,
            previous_hash: GENESIS_HASH.to_owned(),
            previous_seq: 0,
        }
    }

    /// The next entry in sequence order.
    fn push(&mut self, stored: &StoredAuditEntry) -> Result<(), BrokenChain> {
        let broken = |problem: String| BrokenChain {
            seq: stored.seq,
            problem,
        };
        let previous_seq = self.previous_seq;
        if stored.seq != previous_seq + 1 {
            return Err(broken(format!(
                "entry {} follows entry {previous_seq}: {} entr(ies) missing",
                stored.seq,
                stored.seq - previous_seq - 1
            )));
        }
        if stored.prev_hash != self.previous_hash {
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
        if let Some(key) = self.key {
            match &stored.mac {
                None => {
                    return Err(broken(format!(
                        "entry {} carries no authentication code: it was written outside the controller",
                        stored.seq
                    )))
                }
                Some(mac) if !key.verify(stored.seq, &stored.hash, mac) => {
                    return Err(broken(format!(
                        "entry {} has an authentication code that does not match: it was written or \
                         rehashed without the controller's audit key",
                        stored.seq
                    )))
                }
                Some(_) => {}
            }
        }
        self.previous_hash.clone_from(&stored.hash);
        self.previous_seq = stored.seq;
        Ok(())
    }
}

/// What a check of the whole log found (`Store::verify_audit_log`).
pub struct LogVerdict {
    /// Entries in the log.
    pub entries: i64,
    /// The newest entry's sequence number (0: empty).
    pub last_seq: i64,
    /// The chain and codes: intact, or where they first break.
    pub chain: Result<(), BrokenChain>,
    /// The hash of each asked-for entry that exists (the zones' anchors).
    pub hashes: std::collections::HashMap<i64, String>,
}

impl Store {
    /// Checks the whole log's chain and codes, reading it row by row in
    /// constant memory, and picks out the hashes of the entries in `wanted`.
    pub async fn verify_audit_log(&self, wanted: Vec<i64>) -> Result<LogVerdict, StoreError> {
        let key = self.audit_key.clone();
        self.call(move |c| {
            let wanted: std::collections::HashSet<i64> = wanted.into_iter().collect();
            // A page at a time by sequence number: constant memory on both
            // backends (PostgreSQL's rows are read whole, see `db::postgres`).
            let mut statement = c.prepare(&format!(
                "{SELECT_ENTRIES} WHERE seq > ?1 ORDER BY seq LIMIT {VERIFY_PAGE}"
            ))?;
            let mut check = ChainCheck::new(Some(key.as_ref()));
            let mut verdict = LogVerdict {
                entries: 0,
                last_seq: 0,
                chain: Ok(()),
                hashes: Default::default(),
            };
            loop {
                let mut rows = statement.query(params![verdict.last_seq])?;
                let mut read = 0;
                while let Some(row) = rows.next()? {
                    let stored = stored_entry(row)?;
                    read += 1;
                    verdict.entries += 1;
                    verdict.last_seq = stored.seq;
                    if verdict.chain.is_ok() {
                        verdict.chain = check.push(&stored);
                    }
                    if wanted.contains(&stored.seq) {
                        verdict.hashes.insert(stored.seq, stored.hash);
                    }
                }
                if read < VERIFY_PAGE {
                    return Ok(verdict);
                }
            }
        })
        .await
    }

    /// The entries at or after `since` (unix ms), of one rollout and one
    /// procedure when those are non-empty, in order: indexed by time and
    /// rollout, not a read of the whole log.
    pub async fn audit_entries_matching(
        &self,
        since: i64,
        rollout_id: &str,
        procedure: &str,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let (rollout_id, procedure) = (rollout_id.to_owned(), procedure.to_owned());
        self.call(move |c| {
            // Only the filters given, so each can use its index; `+seq`
            // keeps SQLite from walking the whole log in sequence order to
            // spare a sort of the few entries the index finds.
            let mut conditions = Vec::new();
            let mut values = Vec::new();
            if since > 0 {
                conditions.push("at >= ?".to_owned());
                values.push(Value::Int(since));
            }
            for (column, value) in [("rollout_id", rollout_id), ("procedure", procedure)] {
                if !value.is_empty() {
                    conditions.push(format!("{column} = ?"));
                    values.push(Value::Text(value));
                }
            }
            let sql = if conditions.is_empty() {
                format!("{SELECT_ENTRIES} ORDER BY seq")
            } else {
                format!(
                    "{SELECT_ENTRIES} WHERE {} ORDER BY +seq",
                    conditions.join(" AND ")
                )
            };
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(&values, stored_entry)?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::conformance::store_test!(entries_chain_to_their_predecessor, |store, backend| {
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
        assert_eq!(entries.len(), 4, "the key's creation, then a, b, c");
        assert_eq!(entries[0].entry.action, "audit.key_created");
        assert_eq!(entries[0].prev_hash, GENESIS_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        for e in &entries {
            assert_eq!(entry_hash(&e.prev_hash, e.at, &e.entry), e.hash);
        }
        assert_eq!(store.verify_audit(&entries), Ok(()));

        let mut edited = entries.clone();
        edited[2].entry.details = "rewritten".into();
        assert_eq!(store.verify_audit(&edited).map_err(|b| b.seq), Err(3));

        // Rehashed after the edit, as someone without the key would: the
        // chain fits, the code does not.
        edited[2].hash = entry_hash(&edited[2].prev_hash, edited[2].at, &edited[2].entry);
        edited[3].prev_hash = edited[2].hash.clone();
        edited[3].hash = entry_hash(&edited[3].prev_hash, edited[3].at, &edited[3].entry);
        let broken = store.verify_audit(&edited).expect_err("unauthenticated");
        assert_eq!(broken.seq, 3);
        assert!(
            broken.problem.contains("authentication code"),
            "{}",
            broken.problem
        );
        edited[2].mac = None;
        assert!(store
            .verify_audit(&edited)
            .expect_err("unsigned")
            .problem
            .contains("no authentication code"));

        let mut deleted = entries.clone();
        deleted.remove(2);
        let broken = store.verify_audit(&deleted).expect_err("gap");
        assert_eq!(broken.seq, 4);
        assert!(broken.problem.contains("missing"), "{}", broken.problem);
    });

    #[tokio::test]
    async fn a_store_from_before_authentication_is_signed_at_its_first_start_with_a_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path).expect("open");
            store
                .audit(AuditEntry {
                    action: "old".into(),
                    ..Default::default()
                })
                .await
                .expect("append");
        }
        // As an older controller left it: no codes, no key.
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute("UPDATE audit_log SET mac = NULL", [])
            .expect("strip");
        std::fs::remove_file(super::super::default_key_path(&path)).expect("rm key");
        let store = Store::open(&path).expect("reopen");
        let entries = store.audit_entries().await.expect("read");
        assert_eq!(store.verify_audit(&entries), Ok(()));
        let last = entries.last().expect("adoption entry");
        assert_eq!(last.entry.action, "audit.key_created");
        assert!(
            last.entry.details.contains("2 earlier entries"),
            "{}",
            last.entry.details
        );

        // Codes stripped again while the key exists: never re-signed.
        drop(store);
        c.execute("UPDATE audit_log SET mac = NULL WHERE seq = 2", [])
            .expect("strip");
        let store = Store::open(&path).expect("reopen");
        let entries = store.audit_entries().await.expect("read");
        assert_eq!(store.verify_audit(&entries).map_err(|b| b.seq), Err(2));
    }
}
