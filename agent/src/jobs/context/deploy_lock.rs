//! The per-target deploy lock, as the COMMIT sees it.
//!
//! Every job that changes a target takes a session-level advisory lock
//! (`steps::session::take_deploy_lock`) so rollouts on one target never
//! interleave. A session lock is not transactional: SQL run inside the job —
//! a smoke call, a probe, a pgTAP statement, or any routine already in the
//! database that they call — can release it with `pg_advisory_unlock_all()`
//! even in a savepoint the agent rolls back, and another rollout may then
//! take it and snapshot a state this job is about to change. The controller
//! refuses such calls by name, but only the session knows what really ran,
//! so the agent asserts it in each COMMIT's request, ahead of the COMMIT: a
//! transaction whose lock is gone is rolled back instead.

/// Advisory-lock key every pgrollout job that changes a target takes
/// ("pgrollou" in ASCII). Advisory locks are per database, so this
/// serialises rollouts per target (`max_concurrent = 1`), and a rollback
/// never interleaves with a deploy.
pub const DEPLOY_LOCK_KEY: i64 = 0x7067_726f_6c6c_6f75;

/// Fails with `division_by_zero` unless this session holds
/// [`DEPLOY_LOCK_KEY`]: sent in the COMMIT's own request, ahead of it, so
/// the check costs no round trip of its own (issue 15 item 9) and a lock
/// gone means the COMMIT never runs. A count in a subquery is not folded
/// at plan time; the session runs nothing else in between. `pg_locks` shows
/// a one-`bigint` advisory key as its high half in `classid`, its low half
/// in `objid`, and `objsubid = 1`.
pub const ASSERT_HELD: &str = "SELECT 1 / (SELECT count(*)::int FROM pg_catalog.pg_locks \
    WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() AND granted \
      AND classid = 1885827695 AND objid = 1819045749 AND objsubid = 1)";

/// What the operator reads when the lock was gone at COMMIT.
pub fn released_message(target: &str) -> String {
    format!(
        "the deploy lock on target {target} was released while this job ran — SQL it ran (a smoke \
         test call, probe or test, or a function they call) released it, e.g. with \
         pg_advisory_unlock_all(); another rollout could have started, so nothing was committed: \
         the transaction was rolled back. Remove the unlock from that SQL and deploy again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pg_locks_halves_are_those_of_the_key() {
        // Keeps ASSERT_HELD's literals and the key in step.
        let key = DEPLOY_LOCK_KEY as u64;
        assert!(ASSERT_HELD.contains(&format!("classid = {}", key >> 32)));
        assert!(ASSERT_HELD.contains(&format!("objid = {}", key & 0xffff_ffff)));
    }
}
