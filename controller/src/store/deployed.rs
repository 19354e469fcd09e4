//! What is deployed in an environment, as far as the controller knows: the
//! plans of its successful deploys, newest first. In an environment that
//! requires approval, smoke tests and watch probes run only from these
//! plans (`engine/approved_sql.rs`), never from an operator's working copy.

use super::db::params;

use super::{state, Store, StoreError};

/// A plan whose deploy succeeded in an environment.
pub struct DeployedPlan {
    pub rollout_id: String,
    pub plan_id: String,
    pub commit_sha: String,
    /// The plan, prost-encoded as the wire carries it.
    pub content: Vec<u8>,
}

impl Store {
    /// The newest `limit` plans deployed to `environment` by a deploy that
    /// succeeded and was not rolled back as a whole, newest first.
    pub async fn deployed_plans(
        &self,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<DeployedPlan>, StoreError> {
        let environment = environment.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT r.id, p.plan_id, p.commit_sha, p.content FROM rollouts r
                 JOIN plans p ON p.plan_id = r.plan_id
                 WHERE r.environment = ?1 AND r.kind = 'deploy' AND r.state = ?2
                 ORDER BY r.created_at DESC, r.id DESC
                 LIMIT ?3",
            )?;
            let rows =
                statement.query_map(params![environment, state::SUCCEEDED, limit], |row| {
                    Ok(DeployedPlan {
                        rollout_id: row.get(0)?,
                        plan_id: row.get(1)?,
                        commit_sha: row.get(2)?,
                        content: row.get(3)?,
                    })
                })?;
            rows.collect()
        })
        .await
    }
}
