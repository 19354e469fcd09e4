//! Deploy requests that wait for approvals, and the approvals themselves.

use super::db::{self, params, OptionalExtension};

use super::{decode_plan, Store, StoreError};
use crate::domain::plan::Plan;

/// A deploy request parked until its approvals are in.
#[derive(Clone, Debug)]
pub struct PendingRollout {
    pub request_id: String,
    pub environment: String,
    pub plan: Plan,
    pub actor: String,
    pub trace_id: String,
    pub continue_on_error: bool,
    pub ticket: String,
    pub runbook: String,
    pub rollback_plan: String,
    pub state: String,
    pub rollout_id: Option<String>,
}

/// One approver's decision.
#[derive(Clone, Debug)]
pub struct Approval {
    pub approver: String,
    pub role: String,
    pub decision: String,
}

/// The decisions on a request after one was recorded, and whether that one
/// changed anything (a repeat of the same decision does not).
#[derive(Debug)]
pub struct RecordedApproval {
    pub approvals: Vec<Approval>,
    pub changed: bool,
}

/// Serialises appends to `signed_statements` on PostgreSQL (`Conn::serialise`).
const SIGNED_STATEMENTS_LOCK: i64 = 0x7067_726f_6c6c_7373;

impl Store {
    pub async fn park_rollout(&self, pending: &PendingRollout, now: i64) -> Result<(), StoreError> {
        let p = pending.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO pending_rollouts (request_id, environment, plan_id, actor, trace_id, continue_on_error,
                     ticket, runbook, rollback_plan, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'awaiting_approval', ?10)",
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
                    now
                ],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn pending_rollout(
        &self,
        request_id: &str,
    ) -> Result<Option<PendingRollout>, StoreError> {
        let id = request_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT p.request_id, p.environment, pl.content, p.actor, p.trace_id, p.continue_on_error, p.ticket,
                        p.runbook, p.rollback_plan, p.state, p.rollout_id
                 FROM pending_rollouts p JOIN plans pl ON pl.plan_id = p.plan_id WHERE p.request_id = ?1",
                params![id],
                |row| {
                    let request_id: String = row.get(0)?;
                    let content: Vec<u8> = row.get(2)?;
                    // Written by this controller from a validated plan.
                    let plan = decode_plan(2, &content, || format!("request {request_id}"))?;
                    Ok(PendingRollout {
                        request_id,
                        environment: row.get(1)?,
                        plan,
                        actor: row.get(3)?,
                        trace_id: row.get(4)?,
                        continue_on_error: row.get(5)?,
                        ticket: row.get(6)?,
                        runbook: row.get(7)?,
                        rollback_plan: row.get(8)?,
                        state: row.get(9)?,
                        rollout_id: row.get(10)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records a decision (a second one by the same approver and role
    /// replaces the first) and returns every decision on the request.
    pub async fn record_approval(
        &self,
        request_id: &str,
        plan_id: &str,
        approval: &Approval,
        reason: &str,
        now: i64,
    ) -> Result<RecordedApproval, StoreError> {
        let (request_id, plan_id, a, reason) = (
            request_id.to_owned(),
            plan_id.to_owned(),
            approval.clone(),
            reason.to_owned(),
        );
        self.call(move |c| {
            // The same decision again by the same approver and role updates
            // nothing, so `changed` tells a repeat from a new decision.
            let changed = c.execute(
                "INSERT INTO approvals (request_id, plan_id, approver, role, decision, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (request_id, approver, role) DO UPDATE SET decision = ?5, reason = ?6, at = ?7
                 WHERE approvals.decision IS DISTINCT FROM ?5",
                params![request_id, plan_id, a.approver, a.role, a.decision, reason, now],
            )? > 0;
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
            Ok(RecordedApproval {
                approvals: rows.collect::<db::Result<_>>()?,
                changed,
            })
        })
        .await
    }

    /// Closes a request: `approved` (with the rollout it became) or `rejected`.
    /// `false` if it was no longer awaiting approval.
    pub async fn decide_pending(
        &self,
        request_id: &str,
        state: &str,
        rollout_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (id, state, rollout) = (
            request_id.to_owned(),
            state.to_owned(),
            rollout_id.map(str::to_owned),
        );
        self.call(move |c| {
            let updated = c.execute(
                "UPDATE pending_rollouts SET state = ?2, rollout_id = ?3, decided_at = ?4
                 WHERE request_id = ?1 AND state = 'awaiting_approval'",
                params![id, state, rollout, now],
            )?;
            Ok(updated == 1)
        })
        .await
    }

    /// Keeps signed statements for a request (issue 19), after those it has.
    pub async fn add_signed_statements(
        &self,
        request_id: &str,
        statements: Vec<pgrollout_shared::proto::SignedStatement>,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = request_id.to_owned();
        self.call(move |c| {
            // Read the next position, then write it: one writer at a time
            // (SQLite's write lock taken at BEGIN, PostgreSQL's advisory lock).
            let tx = c.immediate_transaction()?;
            tx.serialise(SIGNED_STATEMENTS_LOCK)?;
            let next: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM signed_statements WHERE request_id = ?1",
                params![id],
                |row| row.get(0),
            )?;
            for (offset, s) in statements.iter().enumerate() {
                tx.execute(
                    "INSERT INTO signed_statements (request_id, seq, statement, signature, certificate, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, next + offset as i64, s.statement, s.signature, s.certificate, now],
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// A request's signed statements, in the order they arrived.
    pub async fn signed_statements(
        &self,
        request_id: &str,
    ) -> Result<Vec<pgrollout_shared::proto::SignedStatement>, StoreError> {
        let id = request_id.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT statement, signature, certificate FROM signed_statements WHERE request_id = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![id], |row| {
                Ok(pgrollout_shared::proto::SignedStatement {
                    statement: row.get(0)?,
                    signature: row.get(1)?,
                    certificate: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Records that `agent` refused (job, attempt) (issue 19); true the
    /// first time, so each refusal is audited once however often the agent
    /// reports it.
    pub async fn record_agent_refusal(
        &self,
        agent: &str,
        job_id: &str,
        attempt: u32,
        refused_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (agent, job_id) = (agent.to_owned(), job_id.to_owned());
        self.call(move |c| {
            let inserted = c.execute(
                "INSERT INTO agent_refusals (agent, job_id, attempt, refused_at, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![agent, job_id, attempt, refused_at, now],
            )?;
            Ok(inserted == 1)
        })
        .await
    }
}
