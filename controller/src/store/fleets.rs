//! Issue 24: fleet rollouts — the set of targets a rollout resolved when it
//! started, each target's wave and state, and the rollout of each target
//! (an ordinary row of `rollouts`). Migration 0017.

use super::db::{self, params, OptionalExtension};

use super::{Store, StoreError};

/// What a failed target does to the others.
pub mod policy {
    pub const HALT: &str = "halt";
    pub const CONTINUE: &str = "continue";
    pub const ROLLBACK: &str = "rollback";
}

/// The states of a fleet rollout (its targets use the rollouts' states and
/// `pending`, untouched).
pub mod fleet_state {
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const HALTED: &str = "halted";
    pub const ROLLED_BACK: &str = "rolled_back";
    /// A target not run yet.
    pub const PENDING: &str = "pending";
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetRecord {
    pub id: String,
    pub environment: String,
    pub plan_id: String,
    pub actor: String,
    pub trace_id: String,
    pub policy: String,
    pub state: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetTargetRow {
    pub position: u32,
    pub zone: String,
    pub target: String,
    pub wave: u32,
    pub state: String,
    pub rollout_id: Option<String>,
    pub exit_code: Option<i32>,
    pub message: String,
}

impl Store {
    /// Records a fleet rollout and its resolved targets in one transaction.
    pub async fn create_fleet(
        &self,
        fleet: &FleetRecord,
        targets: &[FleetTargetRow],
    ) -> Result<(), StoreError> {
        let (fleet, targets) = (fleet.clone(), targets.to_vec());
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO fleet_rollouts (id, environment, plan_id, actor, trace_id, policy, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    fleet.id,
                    fleet.environment,
                    fleet.plan_id,
                    fleet.actor,
                    fleet.trace_id,
                    fleet.policy,
                    fleet.state,
                    fleet.created_at
                ],
            )?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO fleet_targets (fleet_id, position, zone, target, wave, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for t in &targets {
                    insert.execute(params![fleet.id, t.position, t.zone, t.target, t.wave, t.state])?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// One target's new state (and its rollout, once it has one).
    pub async fn set_fleet_target(
        &self,
        fleet_id: &str,
        position: u32,
        state: &str,
        rollout_id: Option<&str>,
        exit_code: Option<i32>,
        message: &str,
    ) -> Result<(), StoreError> {
        let (fleet_id, state, rollout_id, message) = (
            fleet_id.to_owned(),
            state.to_owned(),
            rollout_id.map(str::to_owned),
            message.to_owned(),
        );
        self.call(move |c| {
            c.execute(
                "UPDATE fleet_targets SET state = ?3, rollout_id = COALESCE(?4, rollout_id),
                        exit_code = COALESCE(?5, exit_code), message = ?6
                 WHERE fleet_id = ?1 AND position = ?2",
                params![fleet_id, position, state, rollout_id, exit_code, message],
            )
            .map(|_| ())
        })
        .await
    }

    /// The fleet's state; `finished_at` set unless it is running again.
    pub async fn set_fleet_state(
        &self,
        fleet_id: &str,
        state: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (fleet_id, state) = (fleet_id.to_owned(), state.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE fleet_rollouts SET state = ?2,
                        finished_at = CASE WHEN ?2 = 'running' THEN NULL ELSE CAST(?3 AS BIGINT) END
                 WHERE id = ?1",
                params![fleet_id, state, now],
            )
            .map(|_| ())
        })
        .await
    }

    /// Moves a fleet from `from` to `running` only if it is still in `from`:
    /// two `resume`s of one halted rollout never both run it.
    pub async fn claim_fleet(&self, fleet_id: &str, from: &str) -> Result<bool, StoreError> {
        let (fleet_id, from) = (fleet_id.to_owned(), from.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE fleet_rollouts SET state = 'running', finished_at = NULL WHERE id = ?1 AND state = ?2",
                params![fleet_id, from],
            )
            .map(|n| n == 1)
        })
        .await
    }

    /// A fleet rollout and its targets in position order.
    pub async fn fleet(
        &self,
        fleet_id: &str,
    ) -> Result<Option<(FleetRecord, Vec<FleetTargetRow>)>, StoreError> {
        let fleet_id = fleet_id.to_owned();
        self.call(move |c| {
            let record = c
                .query_row(
                    "SELECT id, environment, plan_id, actor, trace_id, policy, state, created_at
                     FROM fleet_rollouts WHERE id = ?1",
                    params![&fleet_id],
                    |row| {
                        Ok(FleetRecord {
                            id: row.get(0)?,
                            environment: row.get(1)?,
                            plan_id: row.get(2)?,
                            actor: row.get(3)?,
                            trace_id: row.get(4)?,
                            policy: row.get(5)?,
                            state: row.get(6)?,
                            created_at: row.get(7)?,
                        })
                    },
                )
                .optional()?;
            let Some(record) = record else {
                return Ok(None);
            };
            let mut statement = c.prepare(
                "SELECT position, zone, target, wave, state, rollout_id, exit_code, message
                 FROM fleet_targets WHERE fleet_id = ?1 ORDER BY position",
            )?;
            let targets = statement
                .query_map(params![&fleet_id], |row| {
                    Ok(FleetTargetRow {
                        position: row.get(0)?,
                        zone: row.get(1)?,
                        target: row.get(2)?,
                        wave: row.get(3)?,
                        state: row.get(4)?,
                        rollout_id: row.get(5)?,
                        exit_code: row.get(6)?,
                        message: row.get(7)?,
                    })
                })?
                .collect::<db::Result<Vec<_>>>()?;
            Ok(Some((record, targets)))
        })
        .await
    }

    /// After a controller restart, or when its driver dies: a fleet rollout
    /// still `running` is `halted` (its driver died with its process); its
    /// running targets are `unknown` (their rollouts are settled as usual)
    /// or, never offered, `pending` again. On a shared store only the fleets
    /// no live controller drives (`sweep`, the rule of `controllers.rs`),
    /// serialised between controllers so each is halted (and audited) once;
    /// `None`: every running fleet (a sole controller's start-up). Returns
    /// the fleets halted.
    pub async fn halt_interrupted_fleets(
        &self,
        now: i64,
        sweep: Option<&super::controllers::Sweep>,
    ) -> Result<Vec<String>, StoreError> {
        let (filter, mut values) = sweep.map_or_else(
            || ("1 = 1".to_owned(), Vec::new()),
            |sweep| sweep.filter("fleet_rollouts.controller_id"),
        );
        let now_param = values.len() + 1;
        values.push(db::Value::Int(now));
        self.call(move |c| {
            let tx = c.transaction()?;
            if tx.dialect() == db::Dialect::Postgres {
                tx.query_row(
                    "SELECT pg_advisory_xact_lock(?1)",
                    params![super::controllers::SETTLE_LOCK],
                    |_| Ok(()),
                )?;
            }
            let ids = {
                // The fleets halted here: `RETURNING` names only those this
                // statement moved.
                let mut statement = tx.prepare(&format!(
                    "UPDATE fleet_rollouts SET state = 'halted', finished_at = ?{now_param}
                     WHERE state = 'running' AND {filter}
                     RETURNING id"
                ))?;
                let mut ids = statement
                    .query_map(&values, |row| row.get::<_, String>(0))?
                    .collect::<db::Result<Vec<_>>>()?;
                ids.sort();
                ids
            };
            for id in &ids {
                tx.execute(
                    "UPDATE fleet_targets SET state = CASE WHEN rollout_id IS NULL THEN 'pending' ELSE 'unknown' END,
                            message = 'interrupted by a controller restart'
                     WHERE fleet_id = ?1 AND state = 'running'",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// A stored plan's wire blob, by id.
    pub async fn plan_blob(&self, plan_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let plan_id = plan_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT content FROM plans WHERE plan_id = ?1",
                params![&plan_id],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::conformance::store_test!(
        a_fleet_and_its_targets_are_recorded_and_claimed_once,
        |store, backend| {
            let fleet = FleetRecord {
                id: "f-1".into(),
                environment: "prod".into(),
                plan_id: "ab".repeat(32),
                actor: "alice".into(),
                trace_id: "t".into(),
                policy: policy::HALT.into(),
                state: fleet_state::RUNNING.into(),
                created_at: 1,
            };
            let target = |position: u32, zone: &str| FleetTargetRow {
                position,
                zone: zone.into(),
                target: "db".into(),
                wave: position,
                state: fleet_state::PENDING.into(),
                rollout_id: None,
                exit_code: None,
                message: String::new(),
            };
            store
                .create_fleet(&fleet, &[target(0, "eu"), target(1, "us")])
                .await
                .expect("create");
            store
                .set_fleet_target("f-1", 1, "failed", Some("r-2"), Some(3), "smoke")
                .await
                .expect("target");
            store
                .set_fleet_state("f-1", fleet_state::HALTED, 2)
                .await
                .expect("state");
            let (record, targets) = store.fleet("f-1").await.expect("read").expect("some");
            assert_eq!(record.state, "halted");
            assert_eq!(targets[0].state, "pending");
            assert_eq!(targets[1].rollout_id.as_deref(), Some("r-2"));
            assert_eq!(targets[1].exit_code, Some(3));
            assert!(store.claim_fleet("f-1", "halted").await.expect("claim"));
            assert!(!store.claim_fleet("f-1", "halted").await.expect("again"));
            // Running when the controller stopped: halted, its running target in doubt.
            store
                .set_fleet_target("f-1", 0, "running", Some("r-1"), None, "")
                .await
                .expect("target");
            assert_eq!(
                store.halt_interrupted_fleets(3, None).await.expect("halt"),
                vec!["f-1".to_owned()]
            );
            let (record, targets) = store.fleet("f-1").await.expect("read").expect("some");
            assert_eq!(
                (record.state.as_str(), targets[0].state.as_str()),
                ("halted", "unknown")
            );
            assert!(store
                .halt_interrupted_fleets(4, None)
                .await
                .expect("again")
                .is_empty());
            assert!(store.fleet("f-2").await.expect("read").is_none());
        }
    );
}
