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
    include_str!("migrations/0022_side_deliveries.sql"),
    include_str!("migrations/0023_versions_pending.sql"),
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
    refuse_newer(current as i64, MIGRATIONS.len() as i64)?;
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
    (
        22,
        include_str!("migrations/postgres/0022_side_deliveries.sql"),
    ),
    (
        23,
        include_str!("migrations/postgres/0023_versions_pending.sql"),
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
    let stored: i64 = connection.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM pgrollout_schema",
        params![],
        |row| row.get(0),
    )?;
    let known = POSTGRES_MIGRATIONS
        .last()
        .map_or(0, |(version, _)| *version);
    refuse_newer(stored, known)?;
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

/// An older controller does not start on a store a newer one migrated
/// (issue 18: controllers are upgraded one at a time). Without this check it
/// ran no migration and carried on, writing rows without what the newer
/// schema's code relies on (a column it never fills, a table it never
/// keeps). A controller already running when another migrates the store is
/// not stopped: migrations are additive so that it keeps working until it is
/// replaced, but once stopped it cannot come back at the older version.
fn refuse_newer(stored: i64, known: i64) -> db::Result<()> {
    if stored <= known {
        return Ok(());
    }
    Err(db::Error::Unavailable(format!(
        "its schema is at version {stored}, newer than this controller knows (pgrollout {}, schema {known}): \
         a newer pgrollout migrated it. An older controller does not start on a newer store; \
         run the version the other controllers run (upgrade this one's binary)",
        env!("CARGO_PKG_VERSION")
    )))
}

/// The store version at which the routine version index exists.
#[cfg(test)]
pub(super) fn history_index_version() -> usize {
    MIGRATIONS
        .iter()
        .position(|m| *m == HISTORY_INDEX)
        .map_or(0, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{MIGRATIONS, POSTGRES_MIGRATIONS};
    use crate::store::db::postgres::PgTarget;
    use crate::store::Store;

    /// A PostgreSQL store's server converts each migration's text from
    /// UTF-8 to its own encoding: a comment's dash has no LATIN1 form.
    #[test]
    fn the_postgres_stores_migrations_are_ascii() {
        for (version, text) in POSTGRES_MIGRATIONS {
            if let Some((line, _)) = text.lines().enumerate().find(|(_, l)| !l.is_ascii()) {
                panic!(
                    "PostgreSQL migration {version}, line {}: not ASCII",
                    line + 1
                );
            }
        }
    }

    /// The message `pgrollout serve` prints for the error, cause included.
    fn refusal(opened: Result<Store, crate::store::StoreError>) -> String {
        match opened {
            Ok(_) => panic!("an older controller opened a store a newer one migrated"),
            Err(error) => format!("{:#}", anyhow::Error::from(error)),
        }
    }

    #[test]
    fn an_older_controller_refuses_a_sqlite_store_a_newer_one_migrated() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        drop(Store::open(&path).expect("a new store"));
        let newer = MIGRATIONS.len() + 1;
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch(&format!("PRAGMA user_version = {newer}")))
            .expect("a newer controller's migration, as far as the version goes");

        let message = refusal(Store::open(&path));
        assert!(
            message.contains(&format!(
                "its schema is at version {newer}, newer than this controller knows"
            )) && message.contains(&format!("schema {})", MIGRATIONS.len())),
            "{message}"
        );
        assert!(
            message.contains("does not start on a newer store"),
            "{message}"
        );
        // Nothing was written: the store is still at the newer version.
        let version: usize = rusqlite::Connection::open(&path)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |row| row.get(0)))
            .expect("version");
        assert_eq!(version, newer);
    }

    #[test]
    fn a_sqlite_store_at_this_controllers_version_opens_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        drop(Store::open(&path).expect("a new store"));
        Store::open(&path).expect("the same version opens");
    }

    fn open_postgres(
        cluster: &pgrollout_tests::PgCluster,
        key: &Path,
    ) -> Result<Store, crate::store::StoreError> {
        Store::open_postgres(
            PgTarget {
                config: cluster.config(),
                ca_file: None,
            },
            key,
        )
    }

    #[tokio::test]
    async fn an_older_controller_refuses_a_postgres_store_a_newer_one_migrated() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("audit-key");
        let cluster = pgrollout_tests::PgCluster::start("store")
            .await
            .expect("a PostgreSQL cluster for the store");
        drop(open_postgres(&cluster, &key).expect("a new store"));
        let client = cluster.connect().await.expect("connect");
        client
            .batch_execute("INSERT INTO pgrollout_schema (version, applied_at) VALUES (1000, 0)")
            .await
            .expect("a newer controller's migration, as far as the version goes");

        let message = refusal(open_postgres(&cluster, &key));
        assert!(
            message.contains("its schema is at version 1000, newer than this controller knows"),
            "{message}"
        );
        assert!(
            !message.contains(cluster.password()),
            "no password: {message}"
        );
        // Reopening at the known version still works once the newer row is gone.
        client
            .batch_execute("DELETE FROM pgrollout_schema WHERE version = 1000")
            .await
            .expect("delete");
        open_postgres(&cluster, &key).expect("the same version opens");
    }
}
