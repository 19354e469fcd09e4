//! What a notification needs from the store: the rollout a finished job
//! belongs to, and whether an operator declared it an emergency.

use super::db::{params, OptionalExtension};
use pgrollout_shared::proto::RolloutStatus;

use super::{Store, StoreError};

impl Store {
    /// The rollout that job `job_id` ran for, as `pgrollout status` shows
    /// it; `None` if the job is unknown.
    pub async fn rollout_of_job(&self, job_id: &str) -> Result<Option<RolloutStatus>, StoreError> {
        let job_id = job_id.to_owned();
        let rollout_id = self
            .call(move |c| {
                c.query_row(
                    "SELECT rollout_id FROM jobs WHERE id = ?1 LIMIT 1",
                    params![job_id],
                    |row| row.get::<_, String>(0),
                )
                .optional()
            })
            .await?;
        match rollout_id {
            Some(id) => self.rollout_status(&id).await,
            None => Ok(None),
        }
    }

    /// The details of the first audit entry with `action` about this
    /// rollout (e.g. `rollback.emergency`, which carries the operator's
    /// reason); `None` if there is none.
    pub async fn audit_details_of(
        &self,
        rollout_id: &str,
        action: &str,
    ) -> Result<Option<String>, StoreError> {
        let (rollout_id, action) = (rollout_id.to_owned(), action.to_owned());
        self.call(move |c| {
            c.query_row(
                "SELECT details FROM audit_log WHERE rollout_id = ?1 AND action = ?2 ORDER BY seq LIMIT 1",
                params![rollout_id, action],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }
}
