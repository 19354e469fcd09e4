//! What rollbacks need from the store: the deploys an environment received,
//! with their plans (the second rollback source: every version the
//! controller holds) and results, one rollout's summary, and marking a
//! rollout that was rolled back as a whole.

use rusqlite::{params, OptionalExtension};

use super::{state, Store, StoreError};

/// One job result of a rollout, with the plan it ran.
pub struct StoredResult {
    pub rollout_id: String,
    /// The plan, prost-encoded as the wire carries it.
    pub plan: Vec<u8>,
    /// The job's result, prost-encoded.
    pub result: Vec<u8>,
}

/// A rollout as `rollback --rollout` needs it.
pub struct RolloutSummary {
    pub environment: String,
    pub kind: String,
    pub state: String,
    pub label: String,
    pub plan: Vec<u8>,
}

impl Store {
    /// The newest `limit` job results in `environment` that ran a plan,
    /// newest first.
    pub async fn results_in(
        &self,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<StoredResult>, StoreError> {
        let environment = environment.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT r.id, p.content, j.result FROM rollouts r
                 JOIN plans p ON p.plan_id = r.plan_id
                 JOIN jobs j ON j.rollout_id = r.id
                 WHERE r.environment = ?1 AND j.result IS NOT NULL
                 ORDER BY r.created_at DESC, j.offered_at DESC
                 LIMIT ?2",
            )?;
            let rows = statement.query_map(params![environment, limit], |row| {
                Ok(StoredResult {
                    rollout_id: row.get(0)?,
                    plan: row.get(1)?,
                    result: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// One rollout's environment, kind, state and plan; `None` if unknown.
    pub async fn rollout_summary(&self, id: &str) -> Result<Option<RolloutSummary>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT r.environment, r.kind, r.state, p.label, p.content FROM rollouts r
                 JOIN plans p ON p.plan_id = r.plan_id WHERE r.id = ?1",
                params![id],
                |row| {
                    Ok(RolloutSummary {
                        environment: row.get(0)?,
                        kind: row.get(1)?,
                        state: row.get(2)?,
                        label: row.get(3)?,
                        plan: row.get(4)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Marks a succeeded rollout as rolled back; `false` if it was not in
    /// state succeeded.
    pub async fn mark_rolled_back(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let updated = c.execute(
                "UPDATE rollouts SET state = ?2 WHERE id = ?1 AND state = ?3",
                params![id, state::ROLLED_BACK, state::SUCCEEDED],
            )?;
            Ok(updated == 1)
        })
        .await
    }
}
