//! Several controllers on one store (issue 18, item 2): each running
//! controller's row (id, address, start, heartbeat, epoch, migration 0019),
//! the controller each job was offered by (`jobs.controller_id`), and the
//! settlement of the jobs whose controller is gone.
//!
//! Why ownership matters: a job out with an agent is followed by the
//! controller that offered it. When that controller dies nobody follows it,
//! so it becomes `unknown` until its agent reports (`faults.rs`). With one
//! controller, "the previous controller" was simply every job out; with two
//! alive, a starting controller must leave the other's jobs alone.

use super::db::{params, Conn, Dialect, Value};
use super::faults::{HeldJob, Interrupted};
use super::{state, Store, StoreError};

/// Serialises the settlement of dead controllers' jobs between controllers
/// sweeping at once on a PostgreSQL store: each job is settled (and
/// audited) by one of them.
pub(super) const SETTLE_LOCK: i64 = 0x7067_726f_6c6c_6374;

/// Whose jobs a settlement takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// At start-up: also the jobs of this controller's previous life (same
    /// id, older epoch), and jobs of no recorded controller when no other
    /// controller is alive.
    AtStart,
    /// While running: only the jobs of controllers whose heartbeat expired.
    DeadOnly,
}

impl Store {
    /// Whether several controllers may share this store: a PostgreSQL one.
    /// An SQLite file is one controller's (it is opened by one process).
    pub fn shared_by_controllers(&self) -> bool {
        matches!(*self.backend, super::Backend::Postgres(_))
    }

    /// Registers this controller (a new epoch when its id has a row) and
    /// returns the epoch.
    pub async fn register_controller(
        &self,
        id: &str,
        address: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let (id, address) = (id.to_owned(), address.to_owned());
        self.call(move |c| {
            c.query_row(
                "INSERT INTO controllers (id, address, started_at, heartbeat_at, epoch)
                 VALUES (?1, ?2, ?3, ?3, 1)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                    epoch = controllers.epoch + 1
                 RETURNING epoch",
                params![id, address, now],
                |row| row.get(0),
            )
        })
        .await
    }

    /// Renews this controller's heartbeat; `false` when its row is no longer
    /// this epoch's (another process started under the same id).
    pub async fn controller_heartbeat(
        &self,
        id: &str,
        epoch: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE controllers SET heartbeat_at = ?3 WHERE id = ?1 AND epoch = ?2",
                params![id, epoch, now],
            )
            .map(|changed| changed == 1)
        })
        .await
    }

    /// Records that controller `id` offered (and follows) a job's attempt.
    pub async fn record_job_controller(
        &self,
        job_id: &str,
        attempt: u32,
        id: &str,
    ) -> Result<(), StoreError> {
        let (job_id, id) = (job_id.to_owned(), id.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET controller_id = ?3 WHERE id = ?1 AND attempt = ?2",
                params![job_id, attempt, id],
            )
            .map(|_| ())
        })
        .await
    }

    /// Settles the offered or running jobs that no live controller follows:
    /// offered to an agent → `unknown` until it reports; never offered →
    /// failed (as `interrupt_running`, which a lone SQLite controller uses).
    /// A controller is alive while its heartbeat is younger than
    /// `dead_after_ms`.
    pub async fn settle_orphaned_jobs(
        &self,
        me: &str,
        which: Settle,
        now: i64,
        dead_after_ms: i64,
    ) -> Result<Interrupted, StoreError> {
        let me = me.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            if tx.dialect() == Dialect::Postgres {
                tx.query_row(
                    "SELECT pg_advisory_xact_lock(?1)",
                    params![SETTLE_LOCK],
                    |_| Ok(()),
                )?;
            }
            let interrupted = orphaned(&tx, &me, which, now - dead_after_ms)?;
            settle(&tx, &interrupted, now, CONTROLLER_STOPPED)?;
            tx.commit()?;
            Ok(interrupted)
        })
        .await
    }

    /// Claims a request's start: compare-and-set from one of `from` to
    /// `starting`, recording the controller that starts it (`started_by`,
    /// migration 0020), so a controller starting beside it, or its
    /// heartbeat sweep, settles the request only once that controller is
    /// dead. The scheduler's claim carries its lease's `fence`, checked in
    /// the same statement. `false` when the request was in none of `from`
    /// (or the fence is stale).
    pub async fn claim_request_start(
        &self,
        request_id: &str,
        from: &[&str],
        started_by: Option<&str>,
        fence: Option<&super::leases::Fence>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut values = vec![
            Value::Text(request_id.to_owned()),
            started_by.map_or(Value::Null, |s| Value::Text(s.to_owned())),
            Value::Int(now),
        ];
        let first = values.len() + 1;
        values.extend(from.iter().map(|s| Value::Text(s.to_string())));
        let sql = format!(
            "UPDATE pending_rollouts SET state = 'starting', note = '', decided_at = ?3, started_by = ?2
             WHERE request_id = ?1 AND state IN ({})",
            super::requests::placeholders(first, from.len())
        );
        let fence = fence.cloned();
        self.call(move |c| {
            let (sql, values) = super::leases::fenced(c, sql, values, fence.as_ref());
            Ok(c.execute(&sql, &values)? == 1)
        })
        .await
    }

    /// The requests left `starting` whose starter no live controller is
    /// (see `no_live_owner`), oldest first.
    pub async fn orphaned_starts(&self, sweep: &Sweep) -> Result<Vec<String>, StoreError> {
        let (filter, values) = sweep.filter("pending_rollouts.started_by");
        self.call(move |c| {
            let mut statement = c.prepare(&format!(
                "SELECT request_id FROM pending_rollouts WHERE state = 'starting' AND {filter}
                 ORDER BY created_at"
            ))?;
            let rows = statement.query_map(&values, |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Records that controller `id` drives fleet rollout `fleet_id` (it
    /// started or resumes it).
    pub async fn record_fleet_driver(&self, fleet_id: &str, id: &str) -> Result<(), StoreError> {
        let (fleet_id, id) = (fleet_id.to_owned(), id.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE fleet_rollouts SET controller_id = ?2 WHERE id = ?1",
                params![fleet_id, id],
            )
            .map(|_| ())
        })
        .await
    }
}

/// The rule "only a dead controller's work" (ARCHITECTURE.md), as SQL over
/// the column naming the controller that owns a row (`jobs.controller_id`,
/// `pending_rollouts.started_by`, `fleet_rollouts.controller_id`), true when
/// no live controller other than this one owns it. Parameters: `?1` this
/// controller's id, `?2` the oldest heartbeat still alive, `?3` 1 at start.
///
/// Alive: another controller whose heartbeat is recent. This controller's
/// own rows are its previous life's only at start. Rows of no recorded
/// controller are taken at start only when no other is alive: one may be
/// recording its claim right now.
fn no_live_owner(owner: &str) -> String {
    format!(
        "CASE
           WHEN {owner} IS NULL THEN ?3 = 1 AND NOT EXISTS (
             SELECT 1 FROM controllers WHERE id <> ?1 AND heartbeat_at >= ?2)
           WHEN {owner} = ?1 THEN ?3 = 1
           ELSE NOT EXISTS (
             SELECT 1 FROM controllers WHERE id = {owner} AND heartbeat_at >= ?2)
         END"
    )
}

/// Who a settlement on a shared store is for: this controller, which of
/// its own rows count as its previous life's, and when a heartbeat expires.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub me: String,
    pub which: Settle,
    pub now: i64,
    pub dead_after_ms: i64,
}

impl Sweep {
    /// `no_live_owner`'s three parameters.
    fn params(&self) -> [Value; 3] {
        [
            Value::Text(self.me.clone()),
            Value::Int(self.now - self.dead_after_ms),
            Value::Int(i64::from(self.which == Settle::AtStart)),
        ]
    }

    /// Whether the row owned by `owner` is no live controller's, with the
    /// parameters to bind first (`?1`–`?3`).
    pub(super) fn filter(&self, owner: &str) -> (String, Vec<Value>) {
        (no_live_owner(owner), self.params().to_vec())
    }
}

/// The jobs out that no live controller other than `me` follows.
fn orphaned(c: &Conn, me: &str, which: Settle, alive_since: i64) -> super::db::Result<Interrupted> {
    let mut statement = c.prepare(&format!(
        "SELECT id, attempt, rollout_id, state = 'offered' AND agent_name IS NULL
         FROM jobs
         WHERE state IN ('offered', 'running') AND {}
         ORDER BY offered_at",
        no_live_owner("jobs.controller_id")
    ))?;
    let at_start = i64::from(which == Settle::AtStart);
    let rows = statement.query_map(params![me, alive_since, at_start], |row| {
        let job = HeldJob {
            job_id: row.get(0)?,
            attempt: row.get(1)?,
            rollout_id: row.get(2)?,
            accepted: true,
        };
        Ok((job, row.get::<_, bool>(3)?))
    })?;
    let mut interrupted = Interrupted::default();
    for row in rows {
        let (job, never_offered) = row?;
        if never_offered {
            interrupted.never_offered.push(job);
        } else {
            interrupted.in_doubt.push(job);
        }
    }
    Ok(interrupted)
}

/// Why a job in doubt was settled, in its rollout's message.
pub(super) const CONTROLLER_STOPPED: &str = "the controller following this job stopped while it was out; unknown until the agent reconnects and reports";

/// Settles the jobs chosen: those out become `unknown`, those never
/// offered fail (`in_doubt_message`: why, for the rollouts in doubt). Used
/// by this controller's sweep and by a sole controller's start-up
/// (`faults.rs`'s `interrupt_running`).
pub(super) fn settle(
    c: &Conn,
    interrupted: &Interrupted,
    now: i64,
    in_doubt_message: &str,
) -> super::db::Result<()> {
    for job in &interrupted.in_doubt {
        c.execute(
            "UPDATE jobs SET state = 'unknown' WHERE id = ?1 AND attempt = ?2",
            params![job.job_id, job.attempt],
        )?;
        c.execute(
            "UPDATE rollouts SET state = ?2, exit_code = 2, finished_at = ?3, message = ?4
             WHERE id = ?1 AND state = 'running'",
            params![job.rollout_id, state::UNKNOWN, now, in_doubt_message],
        )?;
    }
    for job in &interrupted.never_offered {
        c.execute(
            "UPDATE jobs SET state = 'finished', finished_at = ?3 WHERE id = ?1 AND attempt = ?2",
            params![job.job_id, job.attempt, now],
        )?;
        c.execute(
            "UPDATE rollouts SET state = ?2, exit_code = ?3, finished_at = ?4, message = ?5
             WHERE id = ?1 AND state = 'running'",
            params![
                job.rollout_id,
                state::FAILED,
                pgrollout_shared::exit_code::ExitCode::DeploymentFailed.code(),
                now,
                super::NEVER_OFFERED
            ],
        )?;
    }
    Ok(())
}
