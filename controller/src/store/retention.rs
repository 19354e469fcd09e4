//! Retention (issue 17, `[store.retention]`): pruning the step events and job
//! results of rollouts that finished long ago, in (finished_at, id) order
//! from where the last run stopped, a bounded number per transaction so the
//! store is never held for long. Each pruned rollout is recorded with the
//! time (`pruned_rollouts`), which `status` and `log` show in the place of
//! what was pruned.
//!
//! Kept: the rollout row, its plan, the audit log, the routine version index
//! (the rollback's second source), and the results the promotion and
//! tests-passed gates read (`gates.rs`): of each plan in each environment,
//! the newest successful deploy and the newest whose smoke tests ran to the
//! end. A rollout still in doubt (`unknown`) is not pruned.

use super::db::{self, params, OptionalExtension, Transaction};

use super::gates::PlanSuccess;
use super::leases::{hold_fence, Fence};
use super::{state, Store, StoreError};

/// What one pruning pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Rollouts recorded as pruned.
    pub rollouts: u64,
    pub events: u64,
    pub results: u64,
    /// Results kept because a gate reads them.
    pub results_kept: u64,
    /// The pass stopped at its limit: call again.
    pub more: bool,
}

impl Store {
    /// Prunes up to `limit` rollouts that finished before `cutoff` (unix
    /// ms), in one transaction. The retention task passes its lease's
    /// `fence` (issue 18): the page is pruned only while it holds, checked
    /// in the transaction before any delete (`hold_fence`), otherwise
    /// nothing is deleted and the answer is [`StoreError::FenceLost`].
    pub async fn prune_finished_before(
        &self,
        cutoff: i64,
        now: i64,
        limit: u32,
        fence: Option<&Fence>,
    ) -> Result<Pruned, StoreError> {
        let fence = fence.cloned();
        self.call(move |c| {
            let tx = c.immediate_transaction()?;
            if let Some(fence) = &fence {
                if let Err(lost) = hold_fence(&tx, fence)? {
                    return Ok(Err(lost));
                }
            }
            let (after_finished, after_id): (i64, String) = tx
                .query_row(
                    "SELECT finished_at, rollout_id FROM retention_cursor WHERE one = 1",
                    params![],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?
                .unwrap_or((i64::MIN, String::new()));
            let candidates: Vec<Candidate> = {
                let mut statement = tx.prepare(
                    "SELECT id, finished_at, plan_id, environment, kind, state FROM rollouts
                     WHERE finished_at IS NOT NULL AND (finished_at, id) > (?1, ?2) AND finished_at < ?3
                     ORDER BY finished_at, id LIMIT ?4",
                )?;
                let rows = statement.query_map(
                    params![after_finished, after_id, cutoff, limit],
                    |row| {
                        Ok(Candidate {
                            id: row.get(0)?,
                            finished_at: row.get(1)?,
                            plan_id: row.get(2)?,
                            environment: row.get(3)?,
                            kind: row.get(4)?,
                            state: row.get(5)?,
                        })
                    },
                )?;
                rows.collect::<db::Result<_>>()?
            };
            let mut pruned = Pruned::default();
            for candidate in &candidates {
                if candidate.state == state::UNKNOWN {
                    continue;
                }
                prune_one(&tx, candidate, now, &mut pruned)?;
            }
            if let Some(last) = candidates.last() {
                tx.execute(
                    "INSERT INTO retention_cursor (one, finished_at, rollout_id) VALUES (1, ?1, ?2)
                     ON CONFLICT (one) DO UPDATE SET finished_at = excluded.finished_at,
                                                     rollout_id = excluded.rollout_id",
                    params![last.finished_at, last.id],
                )?;
            }
            tx.commit()?;
            // The cursor moved over every candidate, pruned or in doubt; a
            // full page means there may be more.
            pruned.more = candidates.len() as u64 == u64::from(limit);
            Ok(Ok(pruned))
        })
        .await?
        .map_err(StoreError::FenceLost)
    }
}

struct Candidate {
    id: String,
    finished_at: i64,
    plan_id: String,
    environment: String,
    kind: String,
    state: String,
}

fn prune_one(
    tx: &Transaction<'_>,
    candidate: &Candidate,
    now: i64,
    pruned: &mut Pruned,
) -> db::Result<()> {
    let events = tx.execute(
        "DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE rollout_id = ?1)",
        params![candidate.id],
    )?;
    let keep_result = a_gate_reads(tx, candidate)?;
    let results = if keep_result {
        0
    } else {
        tx.execute(
            "UPDATE jobs SET result = NULL WHERE rollout_id = ?1 AND result IS NOT NULL",
            params![candidate.id],
        )?
    };
    tx.execute(
        "INSERT INTO pruned_rollouts (rollout_id, pruned_at, result_kept) VALUES (?1, ?2, ?3)
         ON CONFLICT (rollout_id) DO UPDATE SET pruned_at = excluded.pruned_at,
                                               result_kept = excluded.result_kept",
        params![candidate.id, now, keep_result],
    )?;
    pruned.rollouts += 1;
    pruned.events += events as u64;
    pruned.results += results as u64;
    pruned.results_kept += u64::from(keep_result);
    Ok(())
}

/// Whether `plan_succeeded_in` (the promotion and tests-passed gates) reads
/// this rollout's result: it is a successful deploy, and the newest of its
/// plan in its environment, or the newest whose smoke tests ran to the end.
fn a_gate_reads(tx: &Transaction<'_>, candidate: &Candidate) -> db::Result<bool> {
    if candidate.kind != "deploy"
        || !matches!(
            candidate.state.as_str(),
            state::SUCCEEDED | state::ROLLED_BACK
        )
    {
        return Ok(false);
    }
    // The same query as the gate's, newest first.
    let mut statement = tx.prepare(
        "SELECT r.id, r.actor, j.result FROM rollouts r JOIN jobs j ON j.rollout_id = r.id
         WHERE r.plan_id = ?1 AND r.environment = ?2 AND r.kind = 'deploy'
           AND r.state IN ('succeeded', 'rolled_back') AND j.result IS NOT NULL
         ORDER BY r.created_at DESC",
    )?;
    let successes = statement
        .query_map(params![candidate.plan_id, candidate.environment], |row| {
            let result: Vec<u8> = row.get(2)?;
            PlanSuccess::from_result(row.get(0)?, row.get(1)?, 2, &result)
        })?
        .collect::<db::Result<Vec<_>>>()?;
    let newest = successes.first().map(|s| s.rollout_id.as_str());
    let newest_completed = successes
        .iter()
        .find(|s| s.smoke_completed)
        .map(|s| s.rollout_id.as_str());
    Ok(newest == Some(candidate.id.as_str()) || newest_completed == Some(candidate.id.as_str()))
}
