//! What the deployment metrics are computed from: every finished deploy and
//! rollback rollout with its timestamps, and the number of rollouts in each
//! state. The figures themselves are computed in `crate::metrics`.

use super::db::{self, params, OptionalExtension};

use super::{Store, StoreError};

/// One finished deploy or rollback rollout, as the metrics need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedRollout {
    pub rollout_id: String,
    pub plan_id: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// The plan's label: the procedure (or a batch's list name).
    pub procedure: String,
    pub environment: String,
    pub state: String,
    pub exit_code: i32,
    pub created_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
    /// Whether its plan's label names every routine of the plan
    /// (`plans.names_routines`): `Some(true)` a deploy of one routine,
    /// `Some(false)` a batch, `None` a plan without routines (a rollback's).
    pub names_routines: Option<bool>,
}

/// Whether `label` names every one of `routines` (`name` or `schema.name`),
/// `None` when there are none: what `plans.names_routines` holds.
pub(crate) fn label_names_routines<'a>(
    label: &str,
    routines: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<bool> {
    let mut routines = routines.into_iter().peekable();
    routines.peek()?;
    Some(routines.all(|(schema, name)| {
        name == label
            || label
                .strip_prefix(schema)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(name)
    }))
}

/// Migration 0014's step: `plans.names_routines` of every plan stored before
/// it, each plan decoded once (only its routines' names, [`PlanNames`]). A
/// plan that does not decode fails the migration, naming it: the store is
/// damaged and the metrics would count its rollouts wrongly.
pub(super) fn backfill_names_routines(tx: &db::Transaction<'_>) -> db::Result<()> {
    let started = std::time::Instant::now();
    let mut read = tx.prepare("SELECT plan_id, label, content FROM plans")?;
    let mut write = tx.prepare("UPDATE plans SET names_routines = ?2 WHERE plan_id = ?1")?;
    let mut rows = read.query(params![])?;
    let mut plans = 0_u64;
    while let Some(row) = rows.next()? {
        let plan_id: String = row.get(0)?;
        let label: String = row.get(1)?;
        let content = row.get_blob(2)?;
        let names: PlanNames =
            super::decode_blob(2, content, "plan", || format!("plan {plan_id}"))?;
        let answer = label_names_routines(
            &label,
            names
                .routines
                .iter()
                .map(|r| (r.schema.as_str(), r.name.as_str())),
        );
        write.execute(params![plan_id, answer])?;
        plans += 1;
    }
    tracing::info!(
        plans,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store: recorded which plans name their routines (once, for the metrics)"
    );
    Ok(())
}

/// Only the routines' names of a stored `proto::Plan` (its field 4, and
/// fields 1 and 2 of each `Routine`): prost skips the other fields without
/// copying them, so a batch plan's SQL text is never allocated for this.
#[derive(Clone, PartialEq, prost::Message)]
struct PlanNames {
    #[prost(message, repeated, tag = "4")]
    routines: Vec<RoutineName>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RoutineName {
    #[prost(string, tag = "1")]
    schema: String,
    #[prost(string, tag = "2")]
    name: String,
}

/// How many rollouts of one kind are in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCount {
    pub kind: String,
    pub state: String,
    pub count: u64,
}

/// What the metrics' summary reads on a scrape: the rollouts changed since
/// its last one.
pub struct RolloutChanges {
    /// The change log's position these bring the reader to.
    pub watermark: i64,
    pub changes: Vec<RolloutChange>,
}

/// One changed rollout.
pub struct RolloutChange {
    pub rollout_id: String,
    /// Its kind now (empty when it no longer exists).
    pub kind: String,
    /// What it was before the first of these changes, if it was finished
    /// then (a finished deploy or rollback was counted with these values).
    pub was: Option<Before>,
    /// Something the summary cannot apply incrementally happened to it.
    pub forced: bool,
    /// As it is now, if it is a finished deploy or rollback.
    pub now: Option<FinishedRollout>,
}

/// The values a change replaced.
pub struct Before {
    pub state: String,
    pub exit_code: i32,
    pub finished_at_unix_ms: i64,
}

/// The finished deploys and rollbacks, oldest first (see
/// [`Store::finished_deploys_and_rollbacks`]).
fn finished(c: &db::Conn, procedure: &str, environment: &str) -> db::Result<Vec<FinishedRollout>> {
    let mut statement = c.prepare(
        "SELECT r.id, r.plan_id, r.kind, p.label, r.environment, r.state, r.exit_code, r.created_at, r.finished_at,
                p.names_routines
         FROM rollouts r JOIN plans p ON p.plan_id = r.plan_id
         WHERE r.kind IN ('deploy', 'rollback')
           AND r.finished_at IS NOT NULL AND r.exit_code IS NOT NULL
           AND (?1 = '' OR p.label = ?1) AND (?2 = '' OR r.environment = ?2)
         ORDER BY r.created_at, r.id",
    )?;
    let rows = statement.query_map(params![procedure, environment], |row| {
        Ok(FinishedRollout {
            rollout_id: row.get(0)?,
            plan_id: row.get(1)?,
            kind: row.get(2)?,
            procedure: row.get(3)?,
            environment: row.get(4)?,
            state: row.get(5)?,
            exit_code: row.get(6)?,
            created_at_unix_ms: row.get(7)?,
            finished_at_unix_ms: row.get(8)?,
            names_routines: row.get(9)?,
        })
    })?;
    rows.collect()
}

/// The change log's advisory lock on PostgreSQL: taken by the trigger on
/// `rollouts` in every transaction that changes a rollout (migration
/// `postgres/0001_baseline.sql`, the same number), and by the readers of the
/// log, so change numbers follow commit order and a reader's two reads (the
/// log's position, the rollouts) see one moment. A no-op on SQLite.
const ROLLOUT_CHANGES_LOCK: i64 = 0x7067_726f_6c6c_6367;

impl Store {
    /// Every finished deploy and rollback, oldest first, restricted to one
    /// procedure and one environment when those are non-empty (what the
    /// summary is checked against).
    #[cfg(test)]
    pub async fn finished_deploys_and_rollbacks(
        &self,
        procedure: &str,
        environment: &str,
    ) -> Result<Vec<FinishedRollout>, StoreError> {
        let (procedure, environment) = (procedure.to_owned(), environment.to_owned());
        self.call(move |c| finished(c, &procedure, &environment))
            .await
    }

    /// Every finished deploy and rollback, and the position in the change
    /// log they are as of — read under the one connection's lock, so no
    /// write falls between — with the changes up to it deleted: the start of
    /// the metrics' summary (`crate::metrics::summary`).
    pub async fn finished_as_of_change(&self) -> Result<(i64, Vec<FinishedRollout>), StoreError> {
        self.call(|c| {
            let tx = c.transaction()?;
            // No change commits while we read (see ROLLOUT_CHANGES_LOCK).
            tx.serialise(ROLLOUT_CHANGES_LOCK)?;
            let watermark: i64 = tx.query_row(
                "SELECT COALESCE(max(seq), 0) FROM rollout_changes",
                params![],
                |row| row.get(0),
            )?;
            let rows = finished(&tx, "", "")?;
            tx.execute(
                "DELETE FROM rollout_changes WHERE seq <= ?1",
                params![watermark],
            )?;
            tx.commit()?;
            Ok((watermark, rows))
        })
        .await
    }

    /// What changed in the rollouts since `watermark` (the log's position
    /// the caller has applied), each changed rollout once: as it was before
    /// its first change since then and as it is now; consumed changes are
    /// deleted. Costs what changed, never what the history holds.
    pub async fn rollout_changes_since(
        &self,
        watermark: i64,
    ) -> Result<RolloutChanges, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.serialise(ROLLOUT_CHANGES_LOCK)?;
            let mut changes: Vec<RolloutChange> = Vec::new();
            let mut last = watermark;
            {
                let mut read = tx.prepare(
                    "SELECT seq, rollout_id, old_state, old_exit_code, old_finished_at, forced
                     FROM rollout_changes WHERE seq > ?1 ORDER BY seq",
                )?;
                let mut rows = read.query(params![watermark])?;
                let mut seen: std::collections::HashMap<String, usize> = Default::default();
                while let Some(row) = rows.next()? {
                    last = row.get(0)?;
                    let rollout_id: String = row.get(1)?;
                    let forced: bool = row.get(5)?;
                    if let Some(&at) = seen.get(&rollout_id) {
                        changes[at].forced |= forced;
                        continue;
                    }
                    let old_finished: Option<i64> = row.get(4)?;
                    let old_exit: Option<i32> = row.get(3)?;
                    let was = match (row.get::<_, Option<String>>(2)?, old_exit, old_finished) {
                        (Some(state), Some(exit_code), Some(finished_at)) => Some(Before {
                            state,
                            exit_code,
                            finished_at_unix_ms: finished_at,
                        }),
                        _ => None,
                    };
                    seen.insert(rollout_id.clone(), changes.len());
                    changes.push(RolloutChange {
                        rollout_id,
                        was,
                        forced,
                        kind: String::new(),
                        now: None,
                    });
                }
            }
            let mut current = tx.prepare(
                "SELECT r.id, r.plan_id, r.kind, p.label, r.environment, r.state, r.exit_code, r.created_at, r.finished_at,
                        p.names_routines
                 FROM rollouts r JOIN plans p ON p.plan_id = r.plan_id WHERE r.id = ?1",
            )?;
            for change in &mut changes {
                let row = current
                    .query_row(params![change.rollout_id], |row| {
                        Ok((
                            row.get::<_, String>(2)?,
                            row.get::<_, Option<i32>>(6)?,
                            row.get::<_, Option<i64>>(8)?,
                            FinishedRollout {
                                rollout_id: row.get(0)?,
                                plan_id: row.get(1)?,
                                kind: row.get(2)?,
                                procedure: row.get(3)?,
                                environment: row.get(4)?,
                                state: row.get(5)?,
                                exit_code: 0,
                                created_at_unix_ms: row.get(7)?,
                                finished_at_unix_ms: 0,
                                names_routines: row.get(9)?,
                            },
                        ))
                    })
                    .optional()?;
                if let Some((kind, exit_code, finished_at, mut rollout)) = row {
                    change.kind = kind;
                    if let (Some(exit_code), Some(finished_at)) = (exit_code, finished_at) {
                        if matches!(rollout.kind.as_str(), "deploy" | "rollback") {
                            rollout.exit_code = exit_code;
                            rollout.finished_at_unix_ms = finished_at;
                            change.now = Some(rollout);
                        }
                    }
                } else {
                    change.forced = true;
                }
            }
            drop(current);
            tx.execute("DELETE FROM rollout_changes WHERE seq <= ?1", params![last])?;
            tx.commit()?;
            Ok(RolloutChanges {
                watermark: last,
                changes,
            })
        })
        .await
    }

    /// Whether each plan's label names its routines, decided from the
    /// stored plan itself: what `plans.names_routines` is checked against
    /// (`metrics::summary_tests`). The metrics read the column.
    #[cfg(test)]
    pub async fn plan_labels_name_routines(
        &self,
        plan_ids: Vec<String>,
    ) -> Result<Vec<(String, Option<bool>)>, StoreError> {
        self.call(move |c| {
            let mut statement = c.prepare("SELECT label, content FROM plans WHERE plan_id = ?1")?;
            let mut answers = Vec::with_capacity(plan_ids.len());
            for plan_id in plan_ids {
                let (label, content): (String, Vec<u8>) =
                    statement.query_row(params![plan_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
                let plan: PlanNames =
                    super::decode_blob(1, &content, "plan", || format!("plan {plan_id}"))?;
                let names_routines = (!plan.routines.is_empty()).then(|| {
                    plan.routines.iter().all(|routine| {
                        routine.name == label
                            || format!("{}.{}", routine.schema, routine.name) == label
                    })
                });
                answers.push((plan_id, names_routines));
            }
            Ok(answers)
        })
        .await
    }

    /// A read that proves the store answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| c.query_row("SELECT count(*) FROM rollouts", params![], |_| Ok(())))
            .await
    }

    /// Rollouts counted by kind and state, in that order: the counts the
    /// store keeps as rollouts are written (migration 0013), not a scan.
    pub async fn rollouts_by_state(&self) -> Result<Vec<StateCount>, StoreError> {
        self.call(|c| {
            let mut statement = c.prepare(
                "SELECT kind, state, count FROM rollout_state_counts WHERE count > 0 ORDER BY kind, state",
            )?;
            let rows = statement.query_map(params![], |row| {
                Ok(StateCount {
                    kind: row.get(0)?,
                    state: row.get(1)?,
                    count: row.get::<_, i64>(2)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::{Plan, Routine};
    use prost::Message;

    #[test]
    fn the_names_view_reads_a_stored_plans_routines() {
        let routine = |schema: &str, name: &str| Routine {
            schema: schema.into(),
            name: name.into(),
            create_sql: "CREATE FUNCTION … a long body …".into(),
            ..Routine::default()
        };
        let plan = Plan {
            plan_id: "p".into(),
            label: "sprint1".into(),
            routines: vec![routine("public", "a"), routine("billing", "b")],
            ..Plan::default()
        };
        let names = PlanNames::decode(plan.encode_to_vec().as_slice()).expect("decodes");
        let names: Vec<(&str, &str)> = names
            .routines
            .iter()
            .map(|r| (r.schema.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(names, [("public", "a"), ("billing", "b")]);
    }

    #[test]
    fn the_change_log_trigger_takes_the_lock_its_readers_take() {
        let baseline = include_str!("migrations/postgres/0001_baseline.sql");
        assert!(baseline.contains(&format!("pg_advisory_xact_lock({ROLLOUT_CHANGES_LOCK})")));
    }

    crate::store::conformance::store_test!(
        plans_record_whether_their_label_names_their_routines_and_older_ones_are_filled,
        |store, backend| {
            let routine = |schema: &str, name: &str| Routine {
                schema: schema.into(),
                name: name.into(),
                ..Routine::default()
            };
            let plans = [
                ("f", vec![routine("public", "f")], Some(true)),
                ("billing.g", vec![routine("billing", "g")], Some(true)),
                (
                    "sprint1",
                    vec![routine("public", "f"), routine("public", "g")],
                    Some(false),
                ),
                ("f", vec![], None),
            ];
            for (n, (label, routines, _)) in plans.iter().enumerate() {
                let plan = Plan {
                    plan_id: format!("{n:064x}"),
                    label: (*label).into(),
                    routines: routines.clone(),
                    ..Plan::default()
                };
                store.save_plan(&plan, 1).await.expect("plan");
            }
            let read = |store: Store| async move {
                store
                    .call(|c| {
                        let mut statement =
                            c.prepare("SELECT names_routines FROM plans ORDER BY plan_id")?;
                        let rows =
                            statement.query_map(params![], |row| row.get::<_, Option<bool>>(0))?;
                        rows.collect::<db::Result<Vec<_>>>()
                    })
                    .await
                    .expect("read")
            };
            let expected: Vec<Option<bool>> = plans.iter().map(|p| p.2).collect();
            assert_eq!(read(store.clone()).await, expected, "written with the plan");
            // A store from before migration 0014: filled once by its step.
            store
                .call(|c| {
                    c.execute("UPDATE plans SET names_routines = NULL", params![])?;
                    let tx = c.transaction()?;
                    backfill_names_routines(&tx)?;
                    tx.commit()
                })
                .await
                .expect("backfill");
            assert_eq!(read(store).await, expected, "backfilled");
        }
    );
}
