//! Parked deploy requests beyond approvals: scheduled ones (waiting for a
//! window), their moves between states, and what `status` and `rollouts`
//! show of them. Every state change is a compare-and-set on the current
//! state, so a cancel and the scheduler's start cannot both win.

use super::db::{params, OptionalExtension, Value};
use pgrollout_shared::proto::{Plan, RolloutStatus};

use super::{decode_blob, Approval, PendingRollout, Store, StoreError};

/// Request states (pending_rollouts.state).
pub mod request_state {
    pub const AWAITING_APPROVAL: &str = "awaiting_approval";
    pub const SCHEDULED: &str = "scheduled";
    /// Claimed by whoever is starting its rollout right now.
    pub const STARTING: &str = "starting";
    /// Started by its last approval.
    pub const APPROVED: &str = "approved";
    /// Started by the scheduler when its window opened.
    pub const STARTED: &str = "started";
    pub const REJECTED: &str = "rejected";
    pub const CANCELLED: &str = "cancelled";
    /// A gate failed when the scheduler re-evaluated it at its time.
    pub const REFUSED: &str = "refused";
}

/// What the scheduler and `status` need beyond [`PendingRollout`].
#[derive(Clone, Debug, Default)]
pub struct RequestSchedule {
    pub run_at: Option<i64>,
    pub window: String,
    pub note: String,
    pub start_attempts: u32,
    pub created_at: i64,
}

impl Store {
    /// Records a new request that waits only for its window.
    pub async fn schedule_request(
        &self,
        pending: &PendingRollout,
        run_at: i64,
        window: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (p, window) = (pending.clone(), window.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO pending_rollouts (request_id, environment, plan_id, actor, trace_id, continue_on_error,
                     ticket, runbook, rollback_plan, state, created_at, run_at, window_text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'scheduled', ?10, ?11, ?12)",
                params![
                    p.request_id,
                    p.environment,
                    p.plan.plan_id,
                    p.actor,
                    p.trace_id,
                    p.continue_on_error,
                    p.ticket,
                    p.runbook,
                    p.rollback_plan,
                    now,
                    run_at,
                    window
                ],
            )
            .map(|_| ())
        })
        .await
    }

    /// Moves a request in one of `from` to `scheduled` at `run_at`; `false`
    /// if it was in none of them.
    pub async fn reschedule_request(
        &self,
        request_id: &str,
        from: &[&str],
        run_at: i64,
        window: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        self.reschedule_request_fenced(request_id, from, run_at, window, note, None)
            .await
    }

    /// [`Store::reschedule_request`] by the scheduler: with its lease's
    /// fence, checked in the same statement (`leases.rs`).
    pub async fn reschedule_request_fenced(
        &self,
        request_id: &str,
        from: &[&str],
        run_at: i64,
        window: &str,
        note: &str,
        fence: Option<&super::leases::Fence>,
    ) -> Result<bool, StoreError> {
        let mut values = vec![
            Value::Text(request_id.to_owned()),
            Value::Int(run_at),
            Value::Text(window.to_owned()),
            Value::Text(note.to_owned()),
        ];
        let first = values.len() + 1;
        values.extend(from.iter().map(|s| Value::Text(s.to_string())));
        let sql = format!(
            "UPDATE pending_rollouts SET state = 'scheduled', run_at = ?2, window_text = ?3, note = ?4
             WHERE request_id = ?1 AND state IN ({})",
            placeholders(first, from.len())
        );
        let fence = fence.cloned();
        self.call(move |c| {
            let (sql, values) = super::leases::fenced(c, sql, values, fence.as_ref());
            Ok(c.execute(&sql, &values)? == 1)
        })
        .await
    }

    /// Compare-and-set: moves a request in one of `from` to `to`, with the
    /// rollout it became and a note; `false` if it was in none of them.
    pub async fn move_request(
        &self,
        request_id: &str,
        from: &[&str],
        to: &str,
        rollout_id: Option<&str>,
        note: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.move_request_fenced(request_id, from, to, rollout_id, note, now, None)
            .await
    }

    /// [`Store::move_request`] by the scheduler: with its lease's fence,
    /// checked in the same statement (`leases.rs`).
    #[allow(clippy::too_many_arguments)] // move_request's, and the fence
    pub async fn move_request_fenced(
        &self,
        request_id: &str,
        from: &[&str],
        to: &str,
        rollout_id: Option<&str>,
        note: &str,
        now: i64,
        fence: Option<&super::leases::Fence>,
    ) -> Result<bool, StoreError> {
        let mut values = vec![
            Value::Text(request_id.to_owned()),
            Value::Text(to.to_owned()),
            rollout_id.map_or(Value::Null, |r| Value::Text(r.to_owned())),
            Value::Text(note.to_owned()),
            Value::Int(now),
        ];
        let first = values.len() + 1;
        values.extend(from.iter().map(|s| Value::Text(s.to_string())));
        let sql = format!(
            "UPDATE pending_rollouts SET state = ?2, rollout_id = coalesce(?3, rollout_id), note = ?4, decided_at = ?5
             WHERE request_id = ?1 AND state IN ({})",
            placeholders(first, from.len())
        );
        let fence = fence.cloned();
        self.call(move |c| {
            let (sql, values) = super::leases::fenced(c, sql, values, fence.as_ref());
            Ok(c.execute(&sql, &values)? == 1)
        })
        .await
    }

    /// Counts a start attempt that failed (no agent, say) and returns how
    /// many there were.
    pub async fn count_start_attempt(&self, request_id: &str) -> Result<u32, StoreError> {
        let id = request_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "UPDATE pending_rollouts SET start_attempts = start_attempts + 1 WHERE request_id = ?1
                 RETURNING start_attempts",
                params![id],
                |row| row.get(0),
            )
        })
        .await
    }

    pub async fn request_schedule(
        &self,
        request_id: &str,
    ) -> Result<Option<RequestSchedule>, StoreError> {
        let id = request_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT run_at, window_text, note, start_attempts, created_at FROM pending_rollouts WHERE request_id = ?1",
                params![id],
                |row| {
                    Ok(RequestSchedule {
                        run_at: row.get(0)?,
                        window: row.get(1)?,
                        note: row.get(2)?,
                        start_attempts: row.get(3)?,
                        created_at: row.get(4)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Every decision recorded on a request for its plan.
    pub async fn request_approvals(
        &self,
        request_id: &str,
        plan_id: &str,
    ) -> Result<Vec<Approval>, StoreError> {
        let (request_id, plan_id) = (request_id.to_owned(), plan_id.to_owned());
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT approver, role, decision FROM approvals WHERE request_id = ?1 AND plan_id = ?2 ORDER BY at",
            )?;
            let rows = statement.query_map(params![request_id, plan_id], |row| {
                Ok(Approval {
                    approver: row.get(0)?,
                    role: row.get(1)?,
                    decision: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Ids of the requests in `state`, oldest first.
    pub async fn requests_in(&self, state: &str) -> Result<Vec<String>, StoreError> {
        let state = state.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT request_id FROM pending_rollouts WHERE state = ?1 ORDER BY created_at",
            )?;
            let rows = statement.query_map(params![state], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Scheduled requests whose time has come, earliest first.
    pub async fn due_requests(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT request_id FROM pending_rollouts WHERE state = 'scheduled' AND run_at <= ?1
                 ORDER BY run_at, created_at",
            )?;
            let rows = statement.query_map(params![now], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    /// When the next scheduled request is due.
    pub async fn next_run_at(&self) -> Result<Option<i64>, StoreError> {
        self.call(|c| {
            c.query_row(
                "SELECT min(run_at) FROM pending_rollouts WHERE state = 'scheduled'",
                params![],
                |row| row.get(0),
            )
        })
        .await
    }

    /// The rollout a request became, found by the trace id they share: how
    /// a request left `starting` by a crash is settled.
    pub async fn rollout_with_trace(
        &self,
        trace_id: &str,
        since: i64,
    ) -> Result<Option<String>, StoreError> {
        let trace_id = trace_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT id FROM rollouts WHERE trace_id = ?1 AND kind = 'deploy' AND created_at >= ?2
                 ORDER BY created_at LIMIT 1",
                params![trace_id, since],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }

    /// Requests that did not become rollouts (waiting, or ended without
    /// running), newest first, shaped like rollouts for `pgrollout rollouts`.
    pub async fn list_requests(
        &self,
        environment: &str,
        state: &str,
        limit: u32,
    ) -> Result<Vec<RolloutStatus>, StoreError> {
        let (environment, state) = (environment.to_owned(), state.to_owned());
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT p.request_id, p.environment, p.actor, p.trace_id, p.state, p.created_at, p.plan_id,
                        pl.commit_sha, pl.label, pl.content, p.run_at, p.window_text, p.note
                 FROM pending_rollouts p JOIN plans pl ON pl.plan_id = p.plan_id
                 WHERE p.rollout_id IS NULL AND (?1 = '' OR p.environment = ?1) AND (?2 = '' OR p.state = ?2)
                 ORDER BY p.created_at DESC LIMIT ?3",
            )?;
            let rows = statement.query_map(params![environment, state, limit], |row| {
                let request_id: String = row.get(0)?;
                let plan = decode_blob::<Plan>(9, &row.get::<_, Vec<u8>>(9)?, "plan", || {
                    format!("request {request_id}")
                })?;
                Ok(RolloutStatus {
                    rollout_id: request_id,
                    kind: "deploy".into(),
                    environment: row.get(1)?,
                    actor: row.get(2)?,
                    trace_id: row.get(3)?,
                    state: row.get(4)?,
                    created_at_unix_ms: row.get(5)?,
                    plan_id: row.get(6)?,
                    commit_sha: row.get(7)?,
                    label: row.get(8)?,
                    routine_count: plan.routines.len() as u32,
                    routine_identities: plan
                        .routines
                        .iter()
                        .map(|r| format!("{}.{}({})", r.schema, r.name, r.arg_types.join(", ")))
                        .collect(),
                    is_request: true,
                    run_at_unix_ms: row.get::<_, Option<i64>>(10)?.unwrap_or_default(),
                    window: row.get(11)?,
                    request_note: row.get(12)?,
                    ..Default::default()
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// `?first, ?first+1, …` for `count` values.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
