//! The index of every routine version an environment received (issue 17):
//! the second rollback source read by definition hash and name, instead of
//! decoding an environment's stored plans and results on every rollback.
//!
//! What each environment runs (`running_routines`) is kept with each result
//! as it is recorded, in the same transaction. The versions it received
//! (`routine_versions`, `routine_defs`), the costly part, are written after
//! the result has been relayed to the operator, in a transaction of their
//! own (`Store::index_versions_of`, migration 0023's mark; a controller
//! starting indexes what one that died in between left marked). A store
//! from before the index is backfilled by its migration. Each routine's
//! encoded form is stored once (`routine_defs`, keyed by its SHA-256), however
//! many environments and plans carry it.

use super::db::{self, params, OptionalExtension, Transaction};
use pgrollout_shared::proto::{JobResult, Plan};
use prost::Message;
use sha2::{Digest, Sha256};

use super::status::routine_identity;
use super::{Store, StoreError};
use crate::domain::result_payload::ResultPayload;

/// One version of a routine an environment received, newest has the
/// highest `seq`.
pub struct IndexedVersion {
    pub seq: i64,
    pub definition_sha256: String,
    pub plan_id: String,
    pub commit_sha: String,
    /// The routine as its plan carried it (prost `pgrollout.v1.Routine`).
    pub routine: Vec<u8>,
}

/// What `running_routines` learns from job `job_id`'s result: each routine
/// it made live, and from which plan. Written with the result itself (one
/// upsert per routine), so what an environment runs is never behind what its
/// operator was told: a `smoke` right after a rollback reads it.
pub(super) fn index_running_of(
    tx: &Transaction<'_>,
    job_id: &str,
    succeeded: bool,
    result: &ResultPayload,
) -> db::Result<()> {
    let (_, running) = what_to_index(succeeded, result);
    if !running {
        return Ok(());
    }
    let rollout: Option<(String, String, String)> = tx
        .query_row(
            "SELECT r.id, r.environment, r.plan_id FROM jobs j JOIN rollouts r ON r.id = j.rollout_id
             WHERE j.id = ?1 LIMIT 1",
            params![job_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((rollout_id, environment, plan_id)) = rollout else {
        return Ok(());
    };
    index_running(tx, &rollout_id, &environment, &plan_id, result)
}

/// Indexes the versions job `job_id`'s result recorded: each applied
/// routine's new definition hash, with the routine from the rollout's plan.
/// The costly part of the index (issue 15 item 9: ~14 ms for a thousand
/// routines), written after the result was relayed.
pub(super) fn index_versions_of(
    tx: &Transaction<'_>,
    job_id: &str,
    result: &ResultPayload,
) -> db::Result<()> {
    let (versions, _) = what_to_index(false, result);
    if !versions {
        return Ok(());
    }
    let rollout: Option<(String, String, Vec<u8>)> = tx
        .query_row(
            "SELECT r.id, r.environment, p.content FROM jobs j
             JOIN rollouts r ON r.id = j.rollout_id JOIN plans p ON p.plan_id = r.plan_id
             WHERE j.id = ?1 LIMIT 1",
            params![job_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((rollout_id, environment, plan)) = rollout else {
        return Ok(());
    };
    // The index is derived data: a plan that no longer decodes is reported
    // loudly, but indexing must not fail over it.
    let plan = match Plan::decode(plan.as_slice()) {
        Ok(plan) => plan,
        Err(error) => {
            tracing::error!(rollout_id, error = %pgrollout_shared::errors::error_chain(&error),
                "the controller's store is corrupt: this rollout's plan does not decode; left out of the version index");
            return Ok(());
        }
    };
    index_versions(tx, &rollout_id, &environment, &plan, result)
}

/// Takes the mark [`super::Store::record_result`] left on a result:
/// `true` when this transaction is the one to index it.
pub(super) fn claim_pending(tx: &Transaction<'_>, job_id: &str, attempt: u32) -> db::Result<bool> {
    let claimed = tx.execute(
        "UPDATE jobs SET versions_pending = 0 WHERE id = ?1 AND attempt = ?2 AND versions_pending = 1",
        params![job_id, attempt],
    )?;
    Ok(claimed == 1)
}

/// Indexes each recorded result still marked, oldest first, each in its own
/// transaction with its mark; how many were indexed.
pub(super) fn index_left_pending(conn: &mut db::Conn) -> db::Result<usize> {
    let left: Vec<(String, i64, Vec<u8>)> = {
        let mut statement = conn.prepare(
            "SELECT id, attempt, result FROM jobs
             WHERE versions_pending = 1 AND result IS NOT NULL ORDER BY finished_at, id",
        )?;
        statement
            .query_map(params![], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<db::Result<_>>()?
    };
    let mut indexed = 0;
    for (job_id, attempt, blob) in left {
        let tx = conn.transaction()?;
        let attempt = u32::try_from(attempt).unwrap_or_default();
        if claim_pending(&tx, &job_id, attempt)? {
            match JobResult::decode(blob.as_slice()) {
                Ok(wire) => {
                    index_versions_of(&tx, &job_id, &ResultPayload::from(&wire))?;
                    indexed += 1;
                }
                Err(error) => {
                    tracing::error!(job_id, error = %pgrollout_shared::errors::error_chain(&error),
                        "the controller's store is corrupt: this job's result does not decode; left out of the version index");
                }
            }
        }
        tx.commit()?;
    }
    Ok(indexed)
}

/// How `running_routines` names a routine: a plan's identity and a
/// restore's `regprocedure` text alike, without `public.` or quotes.
pub fn routine_key(identity: &str) -> String {
    identity
        .strip_prefix("public.")
        .unwrap_or(identity)
        .replace('"', "")
}

/// Whether a result names versions to index, and whether it says what now
/// runs (only a success does).
fn what_to_index(succeeded: bool, result: &ResultPayload) -> (bool, bool) {
    let versions = result.applied.iter().any(|a| a.has_digest());
    let running = succeeded && !(result.applied.is_empty() && result.restored.is_empty());
    (versions, running)
}

fn index_running(
    tx: &Transaction<'_>,
    rollout_id: &str,
    environment: &str,
    plan_id: &str,
    result: &ResultPayload,
) -> db::Result<()> {
    let mut record = tx.prepare_cached(
        "INSERT INTO running_routines (environment, routine_key, sha256, plan_id, rollout_id)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (environment, routine_key) DO UPDATE SET
             sha256 = excluded.sha256, plan_id = excluded.plan_id, rollout_id = excluded.rollout_id",
    )?;
    let applied = result.applied.iter().map(|a| (&a.identity, &a.new_sha256));
    let restored = result.restored.iter().map(|r| (&r.identity, &r.sha256));
    for (identity, sha256) in applied.chain(restored) {
        record.execute(params![
            environment,
            routine_key(identity),
            sha256,
            plan_id,
            rollout_id
        ])?;
    }
    Ok(())
}

/// Serialises appends to `routine_versions` on PostgreSQL (`Conn::serialise`).
const VERSION_INDEX_LOCK: i64 = 0x7067_726f_6c6c_7669;

fn index_versions(
    tx: &Transaction<'_>,
    rollout_id: &str,
    environment: &str,
    plan: &Plan,
    result: &ResultPayload,
) -> db::Result<()> {
    let by_identity: std::collections::HashMap<String, &pgrollout_shared::proto::Routine> = plan
        .routines
        .iter()
        .map(|r| (routine_identity(r), r))
        .collect();
    // The next positions are read, then written: results recorded at once
    // on other connections wait, so no two versions share a position.
    tx.serialise(VERSION_INDEX_LOCK)?;
    let mut next_seq: i64 = tx.query_row(
        "SELECT coalesce(max(seq), 0) + 1 FROM routine_versions",
        params![],
        |r| r.get(0),
    )?;
    let mut define = tx.prepare_cached(
        "INSERT INTO routine_defs (hash, content) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    let mut record = tx.prepare_cached(
        "INSERT INTO routine_versions (environment, definition_sha256, schema_name, name, plan_id, commit_sha,
                                       rollout_id, routine_hash, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (environment, definition_sha256) DO UPDATE SET
             schema_name = excluded.schema_name, name = excluded.name, plan_id = excluded.plan_id,
             commit_sha = excluded.commit_sha, rollout_id = excluded.rollout_id,
             routine_hash = excluded.routine_hash, seq = excluded.seq",
    )?;
    for applied in &result.applied {
        if !applied.has_digest() {
            continue;
        }
        let Some(routine) = by_identity.get(&applied.identity) else {
            continue;
        };
        let content = routine.encode_to_vec();
        let hash = hex::encode(Sha256::digest(&content));
        define.execute(params![hash, content])?;
        record.execute(params![
            environment,
            applied.new_sha256,
            routine.schema,
            routine.name,
            plan.plan_id,
            plan.commit_sha,
            rollout_id,
            hash,
            next_seq
        ])?;
        next_seq += 1;
    }
    Ok(())
}

/// The migration's Rust step: indexes every result already stored, oldest
/// first, so the newest deploy of a version is the one the index names.
pub(super) fn backfill(tx: &Transaction<'_>) -> db::Result<()> {
    let mut statement = tx.prepare(
        "SELECT r.id, r.environment, r.plan_id, j.result FROM jobs j
         JOIN rollouts r ON r.id = j.rollout_id
         WHERE j.result IS NOT NULL
         ORDER BY r.created_at, j.offered_at",
    )?;
    let rows: Vec<(String, String, String, Vec<u8>)> = statement
        .query_map(params![], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<db::Result<_>>()?;
    drop(statement);
    let mut plans: std::collections::HashMap<String, Option<Plan>> = Default::default();
    let mut indexed = 0usize;
    for (rollout_id, environment, plan_id, result) in rows {
        // A stored blob is the agent's wire result: read once into what the
        // index needs, as a result arriving now is.
        let (succeeded, result) = match JobResult::decode(result.as_slice()) {
            Ok(wire) => (
                wire.outcome() == pgrollout_shared::proto::Outcome::Succeeded,
                ResultPayload::from(&wire),
            ),
            Err(error) => {
                tracing::error!(rollout_id, error = %pgrollout_shared::errors::error_chain(&error),
                    "the controller's store is corrupt: this rollout's result does not decode; left out of the version index");
                continue;
            }
        };
        let (versions, running) = what_to_index(succeeded, &result);
        if !versions && !running {
            continue;
        }
        if !plans.contains_key(&plan_id) {
            let content: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT content FROM plans WHERE plan_id = ?1",
                    params![plan_id],
                    |r| r.get(0),
                )
                .optional()?;
            let plan = content.and_then(|c| match Plan::decode(c.as_slice()) {
                Ok(plan) => Some(plan),
                Err(error) => {
                    tracing::error!(plan_id, error = %pgrollout_shared::errors::error_chain(&error),
                        "the controller's store is corrupt: this plan does not decode; its results are left out of the version index");
                    None
                }
            });
            plans.insert(plan_id.clone(), plan);
        }
        let Some(Some(plan)) = plans.get(&plan_id) else {
            continue;
        };
        if versions {
            index_versions(tx, &rollout_id, &environment, plan, &result)?;
        }
        if running {
            index_running(tx, &rollout_id, &environment, &plan.plan_id, &result)?;
        }
        indexed += 1;
    }
    tracing::info!(
        results = indexed,
        "routine version index built from the stored results"
    );
    Ok(())
}

/// What an environment runs of one routine (`Store::running_routines`).
pub struct RunningRoutine {
    /// The identity asked about.
    pub identity: String,
    /// '' when it was dropped there.
    pub sha256: String,
    pub plan_id: String,
    pub rollout_id: String,
    /// The routine of a plan that deployed this version there, if any
    /// (prost `pgrollout.v1.Routine`).
    pub routine: Option<Vec<u8>>,
}

impl Store {
    /// What `environment` runs now of each of `identities`, as far as the
    /// successful results recorded there say; identities it never ran are
    /// left out. One indexed lookup per routine.
    pub async fn running_routines(
        &self,
        environment: &str,
        identities: Vec<String>,
    ) -> Result<Vec<RunningRoutine>, StoreError> {
        let environment = environment.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT r.sha256, r.plan_id, r.rollout_id, d.content FROM running_routines r
                 LEFT JOIN routine_versions v ON v.environment = r.environment AND v.definition_sha256 = r.sha256
                 LEFT JOIN routine_defs d ON d.hash = v.routine_hash
                 WHERE r.environment = ?1 AND r.routine_key = ?2",
            )?;
            let mut found = Vec::new();
            for identity in identities {
                let row = statement
                    .query_row(params![environment, routine_key(&identity)], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .optional()?;
                if let Some((sha256, plan_id, rollout_id, routine)) = row {
                    found.push(RunningRoutine {
                        identity,
                        sha256,
                        plan_id,
                        rollout_id,
                        routine,
                    });
                }
            }
            Ok(found)
        })
        .await
    }

    /// The versions of the named routines (`schema` `None`: any schema)
    /// `environment` received, newest first, at most `limit` per name.
    pub async fn indexed_versions(
        &self,
        environment: &str,
        names: Vec<(Option<String>, String)>,
        limit: usize,
    ) -> Result<Vec<IndexedVersion>, StoreError> {
        let environment = environment.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT v.seq, v.definition_sha256, v.plan_id, v.commit_sha, d.content
                 FROM routine_versions v JOIN routine_defs d ON d.hash = v.routine_hash
                 WHERE v.environment = ?1 AND v.name = ?2 AND (CAST(?3 AS TEXT) IS NULL OR v.schema_name = ?3)
                 ORDER BY v.seq DESC LIMIT ?4",
            )?;
            let mut found = Vec::new();
            for (schema, name) in &names {
                let rows =
                    statement.query_map(params![environment, name, schema, limit], |row| {
                        Ok(IndexedVersion {
                            seq: row.get(0)?,
                            definition_sha256: row.get(1)?,
                            plan_id: row.get(2)?,
                            commit_sha: row.get(3)?,
                            routine: row.get(4)?,
                        })
                    })?;
                for row in rows {
                    found.push(row?);
                }
            }
            found.sort_by_key(|v| std::cmp::Reverse(v.seq));
            found.dedup_by(|a, b| a.seq == b.seq);
            Ok(found)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use pgrollout_shared::proto::{AppliedRoutine, Outcome, Routine};
    use rusqlite::Connection;

    use super::*;
    use crate::domain::agent_report::ReportedResult;
    use crate::store::{IndexedResult, NewRollout};

    fn routine(name: &str, version: u32) -> Routine {
        Routine {
            schema: "public".into(),
            name: name.into(),
            arg_types: vec!["integer".into()],
            create_sql: format!(
                "CREATE OR REPLACE FUNCTION public.{name}(integer) RETURNS integer LANGUAGE sql AS $$ SELECT {version} $$"
            ),
            ..Default::default()
        }
    }

    /// A deploy of `routines` to dev: its plan and rollout stored, and the
    /// agent's result for it (each routine replaced, hashed by its SQL).
    async fn deployed_result(store: &Store, n: u32, routines: Vec<Routine>) -> ReportedResult {
        let plan = Plan {
            plan_id: format!("{n:064x}"),
            commit_sha: format!("{n:040x}"),
            label: "t".into(),
            routines,
        };
        store.save_plan(&plan, i64::from(n)).await.expect("plan");
        let (rollout, job) = (format!("r-{n}"), format!("j-{n}"));
        store
            .create_rollout(
                NewRollout::dev_deploy(&rollout, &plan.plan_id, i64::from(n)),
                &job,
                1,
            )
            .await
            .expect("rollout");
        ReportedResult::checked(JobResult {
            job_id: job,
            attempt: 1,
            outcome: Outcome::Succeeded as i32,
            applied: plan
                .routines
                .iter()
                .map(|r| AppliedRoutine {
                    identity: routine_identity(r),
                    change: "replaced".into(),
                    new_sha256: hex::encode(Sha256::digest(r.create_sql.as_bytes())),
                    previous_sha256: String::new(),
                })
                .collect(),
            ..Default::default()
        })
    }

    /// A deploy of `routines` to dev, recorded as `serve` records one.
    async fn deploy(store: &Store, n: u32, routines: Vec<Routine>) -> Vec<String> {
        let result = deployed_result(store, n, routines).await;
        store
            .finish_job(&result, i64::from(n))
            .await
            .expect("finish");
        result
            .payload
            .applied
            .iter()
            .map(|a| a.new_sha256.clone())
            .collect()
    }

    async fn versions_of_f(store: &Store) -> Vec<String> {
        store
            .indexed_versions("dev", vec![(None, "f".into())], 100)
            .await
            .expect("versions")
            .into_iter()
            .map(|v| v.definition_sha256)
            .collect()
    }

    crate::store::conformance::store_test!(
        versions_are_indexed_newest_first_on_both_backends,
        |store| {
            let v1 = deploy(&store, 1, vec![routine("f", 1), routine("g", 1)]).await;
            let v2 = deploy(&store, 2, vec![routine("f", 2)]).await;
            let v1_again = deploy(&store, 3, vec![routine("f", 1)]).await;
            assert_eq!(v1_again[0], v1[0]);
            assert_eq!(
                versions_of_f(&store).await,
                vec![v1[0].clone(), v2[0].clone()]
            );
            let in_schema = store
                .indexed_versions("dev", vec![(Some("public".into()), "g".into())], 100)
                .await
                .expect("versions");
            assert_eq!(in_schema.len(), 1);
            assert!(store
                .indexed_versions("dev", vec![(Some("other".into()), "g".into())], 100)
                .await
                .expect("versions")
                .is_empty());
        }
    );

    crate::store::conformance::store_test!(
        results_recorded_at_once_get_distinct_positions_in_the_index,
        |store| {
            // Agents of several zones report at once; the store records them on
            // several connections (PostgreSQL's pool): each version still gets a
            // position of its own, so "newest" is never a tie.
            let deploys: Vec<_> = (1..=12)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        deploy(
                            &store,
                            n,
                            vec![routine(&format!("f{n}"), 1), routine(&format!("g{n}"), n)],
                        )
                        .await
                    })
                })
                .collect();
            for task in deploys {
                task.await.expect("deploy");
            }
            let (rows, distinct): (i64, i64) = store
                .call(|c| {
                    c.query_row(
                        "SELECT count(*), count(DISTINCT seq) FROM routine_versions",
                        params![],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                })
                .await
                .expect("count");
            assert_eq!((rows, distinct), (24, 24));
        }
    );

    /// A deploy's result as the agent link records it: recorded first, its
    /// versions indexed by a later call (or by the pass at start).
    async fn record_only(store: &Store, n: u32, routines: Vec<Routine>) -> ReportedResult {
        let result = deployed_result(store, n, routines).await;
        assert!(store
            .record_result(&result, i64::from(n))
            .await
            .expect("record"));
        result
    }

    crate::store::conformance::store_test!(
        a_recorded_result_is_indexed_once_after_it_is_relayed_or_at_the_next_start,
        |store| {
            let first = record_only(&store, 1, vec![routine("f", 1)]).await;
            assert!(
                versions_of_f(&store).await.is_empty(),
                "recorded, not indexed yet"
            );
            store
                .index_versions_of(IndexedResult::of(&first))
                .await
                .expect("index");
            let indexed = versions_of_f(&store).await;
            assert_eq!(indexed.len(), 1);
            // Again (another controller, a replay): nothing more.
            store
                .index_versions_of(IndexedResult::of(&first))
                .await
                .expect("index again");
            assert_eq!(store.index_left_pending().await.expect("pass"), 0);
            let positions: i64 = store
                .call(|c| {
                    c.query_row("SELECT max(seq) FROM routine_versions", params![], |r| {
                        r.get(0)
                    })
                })
                .await
                .expect("seq");
            assert_eq!(positions, 1, "indexed once");

            // A controller that died between recording and indexing: the
            // pass at start indexes what it left, once.
            let second = record_only(&store, 2, vec![routine("f", 2)]).await;
            assert_eq!(versions_of_f(&store).await, indexed);
            assert_eq!(store.index_left_pending().await.expect("pass"), 1);
            let after = versions_of_f(&store).await;
            assert_eq!(after.len(), 2);
            assert_eq!(
                after[0], second.payload.applied[0].new_sha256,
                "newest first"
            );
            assert_eq!(store.index_left_pending().await.expect("pass"), 0);
            store
                .index_versions_of(IndexedResult::of(&second))
                .await
                .expect("late index");
            assert_eq!(versions_of_f(&store).await, after);
        }
    );

    /// What the migrations after the index's create, undone with it.
    const LATER_MIGRATIONS: &str = "
        DROP TRIGGER rollouts_change_insert; DROP TRIGGER rollouts_change_update;
        DROP TRIGGER rollouts_change_delete; DROP TRIGGER rollout_state_counts_insert;
        DROP TRIGGER rollout_state_counts_update; DROP TRIGGER rollout_state_counts_delete;
        DROP TABLE rollout_changes; DROP TABLE rollout_state_counts; DROP TABLE pruned_rollouts;
        DROP TABLE retention_cursor; DROP INDEX rollouts_by_finished;
        ALTER TABLE plans DROP COLUMN names_routines;
        DROP TABLE controllers; ALTER TABLE jobs DROP COLUMN controller_id;
        ALTER TABLE pending_rollouts DROP COLUMN started_by;
        ALTER TABLE fleet_rollouts DROP COLUMN controller_id; DROP TABLE leases;
        ALTER TABLE agent_streams DROP COLUMN labels; ALTER TABLE job_events DROP COLUMN detail;
        DROP INDEX jobs_versions_pending; ALTER TABLE jobs DROP COLUMN versions_pending;";

    #[tokio::test]
    async fn versions_are_indexed_as_recorded_and_an_older_store_is_backfilled() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        let store = Store::open(&path).expect("open");
        let v1 = deploy(&store, 1, vec![routine("f", 1), routine("g", 1)]).await;
        let v2 = deploy(&store, 2, vec![routine("f", 2)]).await;
        // v1 again, later: it is the newest version now.
        let v1_again = deploy(&store, 3, vec![routine("f", 1)]).await;
        assert_eq!(v1_again[0], v1[0]);
        let indexed = versions_of_f(&store).await;
        assert_eq!(indexed, vec![v1[0].clone(), v2[0].clone()]);
        let defs: i64 = store
            .call(|c| c.query_row("SELECT count(*) FROM routine_defs", params![], |r| r.get(0)))
            .await
            .expect("count");
        assert_eq!(defs, 3, "f v1 stored once, f v2, g v1");
        drop(store);

        // As a controller before issue 17 left it: no index at all.
        let c = Connection::open(&path).expect("sqlite");
        c.execute_batch(&format!(
            "DROP TABLE routine_versions; DROP TABLE routine_defs; DROP TABLE running_routines; DROP INDEX audit_by_at;
             DROP INDEX rollouts_by_created; DROP INDEX rollouts_by_state; DROP INDEX rollouts_by_plan;
             DROP INDEX rollouts_by_trace; DROP INDEX jobs_by_state;
             {LATER_MIGRATIONS} PRAGMA user_version = {};",
            super::super::migrations::history_index_version() - 1
        ))
        .expect("downgrade");
        drop(c);
        let store = Store::open(&path).expect("upgrade");
        assert_eq!(versions_of_f(&store).await, indexed, "backfilled");
        // And it keeps working: a new deploy is indexed as it is recorded.
        let v3 = deploy(&store, 4, vec![routine("f", 3)]).await;
        assert_eq!(versions_of_f(&store).await[0], v3[0]);
    }
}
