//! Embedded, ordered migrations: SQLite's tracked with `user_version`,
//! PostgreSQL's in the `pgrollout_schema` table. The two lists are twins:
//! PostgreSQL's baseline is SQLite's 0001-0017 in one step, and every later
//! migration is written for both, under the same number (ARCHITECTURE.md).

use super::db::{self, params, Conn};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_rollouts.sql"),
    include_str!("migrations/0002_audit.sql"),
    include_str!("migrations/0003_approvals.sql"),
    include_str!("migrations/0004_rollout_gates.sql"),
    include_str!("migrations/0005_job_attempts.sql"),
    include_str!("migrations/0006_scheduled_requests.sql"),
    include_str!("migrations/0007_perf_probes.sql"),
    include_str!("migrations/0008_watches.sql"),
    include_str!("migrations/0009_perf_targets.sql"),
    include_str!("migrations/0010_audit_mac.sql"),
    HISTORY_INDEX,
    include_str!("migrations/0012_drift_scans.sql"),
    include_str!("migrations/0013_metrics_and_retention.sql"),
    PLAN_NAMES_ROUTINES,
    include_str!("migrations/0015_signed_statements.sql"),
    include_str!("migrations/0016_agent_refusals.sql"),
    include_str!("migrations/0017_fleet_rollouts.sql"),
    RESERVED_0018,
    include_str!("migrations/0019_controllers.sql"),
    include_str!("migrations/0020_singleton_owners.sql"),
    include_str!("migrations/0021_agent_streams.sql"),
];

/// 0018 was reserved for a change that, merged, needed no migration. The
/// list is positional (the index is SQLite's `user_version`) and stores have
/// run this no-op as version 18: it stays, and the next migration is 0020.
const RESERVED_0018: &str = "-- 0018: reserved, empty";

/// Issue 17's index of routine versions, built from the stored results by a
/// Rust step (`history_index::backfill`) in the migration's transaction.
const HISTORY_INDEX: &str = include_str!("migrations/0011_history_index.sql");

/// Issue 17's `plans.names_routines`, filled for existing plans by a Rust
/// step (`metrics::backfill_names_routines`) in the migration's transaction.
const PLAN_NAMES_ROUTINES: &str = include_str!("migrations/0014_plan_names_routines.sql");

/// Applies every migration newer than the store's version, each in its own
/// transaction with its version bump, so a crash never leaves one half-done.
pub fn run(connection: &mut Conn) -> db::Result<()> {
    if connection.dialect() == db::Dialect::Postgres {
        return run_postgres(connection);
    }
    let current: usize =
        connection.query_row("PRAGMA user_version", params![], |row| row.get(0))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = connection.transaction()?;
        tx.execute_batch(migration)?;
        if *migration == HISTORY_INDEX {
            super::history_index::backfill(&tx)?;
        }
        if *migration == PLAN_NAMES_ROUTINES {
            super::metrics::backfill_names_routines(&tx)?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        tx.commit()?;
        tracing::info!(version = index + 1, "store migrated");
    }
    Ok(())
}

/// PostgreSQL's migrations, each with the SQLite version it brings the
/// store to.
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (17, include_str!("migrations/postgres/0001_baseline.sql")),
    (19, include_str!("migrations/postgres/0019_controllers.sql")),
    (
        20,
        include_str!("migrations/postgres/0020_singleton_owners.sql"),
    ),
    (
        21,
        include_str!("migrations/postgres/0021_agent_streams.sql"),
    ),
];

/// Serialises migrations between controllers starting at once on one store.
const MIGRATION_LOCK: i64 = 0x7067_726f_6c6c_6d67;

/// Applies PostgreSQL's pending migrations, each in its own transaction
/// under an advisory lock, re-reading the version once it holds the lock:
/// two controllers starting together apply each migration once.
fn run_postgres(connection: &mut Conn) -> db::Result<()> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS pgrollout_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    for (version, migration) in POSTGRES_MIGRATIONS {
        let tx = connection.transaction()?;
        tx.query_row(
            "SELECT pg_advisory_xact_lock(?1)",
            params![MIGRATION_LOCK],
            |_| Ok(()),
        )?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM pgrollout_schema",
            params![],
            |row| row.get(0),
        )?;
        if current >= *version {
            continue;
        }
        tx.execute_batch(migration)?;
        tx.execute(
            "INSERT INTO pgrollout_schema (version, applied_at) VALUES (?1, ?2)",
            params![version, pgrollout_shared::job::now_unix_ms()],
        )?;
        tx.commit()?;
        tracing::info!(version, "store migrated");
    }
    Ok(())
}

/// The store version at which the routine version index exists.
#[cfg(test)]
pub(super) fn history_index_version() -> usize {
    MIGRATIONS
        .iter()
        .position(|m| *m == HISTORY_INDEX)
        .map_or(0, |index| index + 1)
}
