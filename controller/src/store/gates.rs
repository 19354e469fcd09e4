//! What the promotion gates ask the store: did this exact plan succeed in
//! that environment?

use super::db::{self, params};
use pgrollout_shared::proto::{JobResult, PgtapReport};

use super::{decode_blob, Store, StoreError};

/// The most recent successful deploy of a plan in an environment.
#[derive(Debug)]
pub struct PlanSuccess {
    pub rollout_id: String,
    pub actor: String,
    /// Whether a deploy of this plan there ran its smoke tests to the end,
    /// post-commit ones included: not one the ledger settled after its agent
    /// restarted past COMMIT, nor one that found everything unchanged.
    pub smoke_completed: bool,
    /// Whether every smoke report of that completed deploy passed.
    pub smoke_passed: bool,
    /// The pgTAP scripts that deploy ran (none unless its environment runs them).
    pub pgtap: Vec<PgtapReport>,
}

impl PlanSuccess {
    /// `column`: where the result blob is, for a corrupt one's error.
    pub(super) fn from_result(
        rollout_id: String,
        actor: String,
        column: usize,
        result: &[u8],
    ) -> db::Result<Self> {
        // A result that does not decode is damage, not a deploy whose smoke
        // tests never ran: the gate must not read it as either.
        let decoded = decode_blob::<JobResult>(column, result, "job result", || {
            format!("rollout {rollout_id}")
        })?;
        let smoke_completed = decoded.smoke_incomplete.is_empty()
            && decoded.smoke.iter().any(|s| s.phase == "post-commit");
        let smoke_passed = decoded.smoke.iter().all(|s| s.passed);
        Ok(PlanSuccess {
            rollout_id,
            actor,
            smoke_completed,
            smoke_passed,
            pgtap: decoded.pgtap,
        })
    }
}

impl Store {
    /// The latest rollout that deployed `plan_id` to `environment` and
    /// succeeded (rolled back later still counts: it did pass there), with
    /// the smoke verdict of the latest such deploy whose smoke tests ran to
    /// the end — `smoke_completed` is false when none did.
    pub async fn plan_succeeded_in(
        &self,
        plan_id: &str,
        environment: &str,
    ) -> Result<Option<PlanSuccess>, StoreError> {
        let (plan_id, environment) = (plan_id.to_owned(), environment.to_owned());
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT r.id, r.actor, j.result FROM rollouts r JOIN jobs j ON j.rollout_id = r.id
                 WHERE r.plan_id = ?1 AND r.environment = ?2 AND r.kind = 'deploy'
                   AND r.state IN ('succeeded', 'rolled_back') AND j.result IS NOT NULL
                 ORDER BY r.created_at DESC",
            )?;
            let successes = statement
                .query_map(params![plan_id, environment], |row| {
                    let result: Vec<u8> = row.get(2)?;
                    PlanSuccess::from_result(row.get(0)?, row.get(1)?, 2, &result)
                })?
                .collect::<db::Result<Vec<_>>>()?;
            // The smoke verdict of the newest deploy whose smoke tests ran
            // to the end: a later redeploy that found the plan unchanged
            // (its pgTAP reports still count) tested nothing itself.
            let completed = successes
                .iter()
                .find(|s| s.smoke_completed)
                .map(|s| s.smoke_passed);
            Ok(successes.into_iter().next().map(|mut newest| {
                newest.smoke_completed = completed.is_some();
                newest.smoke_passed = completed.unwrap_or(false);
                newest
            }))
        })
        .await
    }
}

impl Store {
    /// Records the gate verdicts a rollout passed, for `status`.
    pub async fn record_gates(
        &self,
        rollout_id: &str,
        gates: &[pgrollout_shared::proto::GateOutcome],
    ) -> Result<(), StoreError> {
        let json = serde_json::Value::Array(
            gates
                .iter()
                .map(
                    |g| serde_json::json!({"gate": g.gate, "passed": g.passed, "reason": g.reason}),
                )
                .collect(),
        )
        .to_string();
        let id = rollout_id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE rollouts SET gates = ?2 WHERE id = ?1",
                params![id, json],
            )
            .map(|_| ())
        })
        .await
    }
}
