//! What rollbacks need from the store: one rollout's summary and results,
//! and marking a rollout that was rolled back as a whole. (The second
//! rollback source, every version the controller holds, is the index in
//! `history_index.rs`.)

use super::db::{params, OptionalExtension};

use super::{state, Store, StoreError};

/// A rollout as `rollback --rollout` needs it.
pub struct RolloutSummary {
    pub environment: String,
    pub kind: String,
    pub state: String,
    pub label: String,
    pub plan: Vec<u8>,
}

impl Store {
    /// Every job result of one rollout (its attempts), prost-encoded: an
    /// indexed read, whatever the store's history.
    pub async fn rollout_results(&self, rollout_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let rollout_id = rollout_id.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT result FROM jobs WHERE rollout_id = ?1 AND result IS NOT NULL",
            )?;
            let rows = statement.query_map(params![rollout_id], |row| row.get(0))?;
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
