//! Statements the controller's edge check already passed, by content, for
//! the life of the process.
//!
//! Every plan that arrives is checked again whatever the CLI said (a
//! hand-made client skips the CLI): each smoke call, probe call and
//! companion statement goes through PostgreSQL's parser. libpg_query hands
//! its tree over as protobuf, and encoding it is most of a parse (upb walks
//! all ~270 kinds of node for every node of the tree): a 1,000-routine batch
//! spent ~4 ms in these parses before its rollout could start, on every
//! deploy of it — dev, then qa, then prod (issue 15 item 9). A check reads
//! nothing but the statement's text, so a statement that passed once passes
//! again: only passes are kept, keyed by the check and the text's SHA-256;
//! a refusal is worked out (and worded) afresh each time. Bounded, and
//! emptied when full.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};

/// Far more statements than a large project holds; 32 bytes each.
pub(super) const MAX_ENTRIES: usize = 100_000;

/// Which check passed: the same text may pass one and not another.
#[derive(Clone, Copy)]
pub enum Check {
    /// A smoke test's or a perf probe's call (`hostile_sql::check_call`).
    Call,
    /// A companion statement's names (`companion_wire.rs`).
    Companion,
}

pub(super) type Key = [u8; 32];

fn passed() -> &'static Mutex<HashSet<Key>> {
    static PASSED: OnceLock<Mutex<HashSet<Key>>> = OnceLock::new();
    PASSED.get_or_init(Mutex::default)
}

pub(super) fn key_of(check: Check, sql: &str) -> Key {
    let mut hasher = Sha256::new();
    hasher.update([check as u8]);
    hasher.update(sql.as_bytes());
    hasher.finalize().into()
}

/// `check(sql)`, unless `sql` passed this very check before.
pub fn checked(
    check: Check,
    sql: &str,
    run: impl FnOnce(&str) -> Result<(), String>,
) -> Result<(), String> {
    let key = key_of(check, sql);
    let known = passed()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&key);
    if known {
        return Ok(());
    }
    run(sql)?;
    let mut passed = passed().lock().unwrap_or_else(PoisonError::into_inner);
    if passed.len() >= MAX_ENTRIES {
        passed.clear();
    }
    passed.insert(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pass_is_remembered_and_only_for_its_own_check() {
        let runs = std::cell::Cell::new(0);
        let count = |result: Result<(), String>| {
            runs.set(runs.get() + 1);
            result
        };
        let sql = "SELECT checked_sql_test_only()";
        assert!(checked(Check::Call, sql, |_| count(Ok(()))).is_ok());
        assert!(checked(Check::Call, sql, |_| count(Err("no".into()))).is_ok());
        assert_eq!(runs.get(), 1, "a pass is not checked again");
        assert_eq!(
            checked(Check::Companion, sql, |_| count(Err("refused".into()))),
            Err("refused".into()),
            "another check runs afresh"
        );
        let bad = "SELECT checked_sql_test_refused()";
        for _ in 0..2 {
            assert!(checked(Check::Call, bad, |_| count(Err("refused".into()))).is_err());
        }
        assert_eq!(runs.get(), 4, "a refusal is checked every time");
    }
}
