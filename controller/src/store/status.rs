//! Reading rollouts back for `pgrollout status` and `pgrollout rollouts`:
//! each with its plan's metadata and its latest job's result.

use super::db::{self, params, OptionalExtension, Row};
use pgrollout_shared::proto::{JobResult, Plan, RolloutStatus};

use super::{decode_blob, Store, StoreError};

const SELECT: &str = "SELECT r.id, r.kind, r.environment, r.zone, r.target, r.actor, r.trace_id, r.state,
        r.exit_code, r.message, r.created_at, r.finished_at, r.plan_id, p.commit_sha, p.label, p.content,
        j.agent_name, j.result, r.gates, pr.pruned_at, pr.result_kept
    FROM rollouts r
    LEFT JOIN pruned_rollouts pr ON pr.rollout_id = r.id
    JOIN plans p ON p.plan_id = r.plan_id
    LEFT JOIN jobs j ON j.rollout_id = r.id
        AND j.attempt = (SELECT max(attempt) FROM jobs WHERE rollout_id = r.id)";

fn rollout_status(row: &Row) -> db::Result<RolloutStatus> {
    let exit_code: Option<i32> = row.get(8)?;
    let rollout_id: String = row.get(0)?;
    let rollout = || format!("rollout {rollout_id}");
    // An operation record (rollback, disable…) is a plan with no routines.
    let plan = decode_blob::<Plan>(15, &row.get::<_, Vec<u8>>(15)?, "plan", rollout)?;
    let result: Option<Vec<u8>> = row.get(17)?;
    // Stored by this controller from messages it decoded: a blob that no
    // longer decodes fails the read, naming the rollout.
    let result = result
        .map(|bytes| decode_blob::<JobResult>(17, &bytes, "job result", rollout))
        .transpose()?;
    let routine_count = routine_count(&plan, result.as_ref());
    Ok(RolloutStatus {
        rollout_id,
        kind: row.get(1)?,
        environment: row.get(2)?,
        zone: row.get(3)?,
        target: row.get(4)?,
        actor: row.get(5)?,
        trace_id: row.get(6)?,
        state: row.get(7)?,
        exit_code: exit_code.unwrap_or_default(),
        finished: exit_code.is_some(),
        message: row.get::<_, Option<String>>(9)?.unwrap_or_default(),
        created_at_unix_ms: row.get(10)?,
        finished_at_unix_ms: row.get::<_, Option<i64>>(11)?.unwrap_or_default(),
        plan_id: row.get(12)?,
        commit_sha: row.get(13)?,
        label: row.get(14)?,
        result,
        agent_name: row.get::<_, Option<String>>(16)?.unwrap_or_default(),
        routine_count,
        routine_identities: plan.routines.iter().map(routine_identity).collect(),
        gates: gates_of(&row.get::<_, String>(18)?),
        pruned_at_unix_ms: row.get::<_, Option<i64>>(19)?.unwrap_or_default(),
        pruned_result_kept: row.get::<_, Option<bool>>(20)?.unwrap_or_default(),
        ..Default::default()
    })
}

/// A deploy's routines are its plan's; a rollback, disable or enable has an
/// operation record instead, and its routines are those its result names.
fn routine_count(plan: &Plan, result: Option<&JobResult>) -> u32 {
    match (plan, result) {
        (plan, _) if !plan.routines.is_empty() => plan.routines.len() as u32,
        (_, Some(result)) => result.restored.len() as u32,
        _ => 0,
    }
}

/// The gate verdicts stored as JSON with the rollout (written by this
/// controller; anything unreadable is shown as no verdicts).
fn gates_of(json: &str) -> Vec<pgrollout_shared::proto::GateOutcome> {
    let values: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    values
        .iter()
        .map(|v| pgrollout_shared::proto::GateOutcome {
            gate: v["gate"].as_str().unwrap_or_default().to_owned(),
            passed: v["passed"].as_bool().unwrap_or(false),
            reason: v["reason"].as_str().unwrap_or_default().to_owned(),
            state: if v["passed"].as_bool().unwrap_or(false) {
                "passed"
            } else {
                "failed"
            }
            .to_owned(),
        })
        .collect()
}

/// `schema.name(argument types)`, as deploy results name routines.
pub(super) fn routine_identity(routine: &pgrollout_shared::proto::Routine) -> String {
    format!(
        "{}.{}({})",
        routine.schema,
        routine.name,
        routine.arg_types.join(", ")
    )
}

impl Store {
    /// One rollout, or `None` if the id is unknown.
    pub async fn rollout_status(&self, id: &str) -> Result<Option<RolloutStatus>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare(&format!("{SELECT} WHERE r.id = ?1"))?;
            let mut rows = statement.query_map(params![id], rollout_status)?;
            rows.next().transpose()
        })
        .await
    }

    /// The newest `limit` rollouts, filtered by environment and state when
    /// those are non-empty.
    pub async fn list_rollouts(
        &self,
        environment: &str,
        state: &str,
        limit: u32,
    ) -> Result<Vec<RolloutStatus>, StoreError> {
        let (environment, state) = (environment.to_owned(), state.to_owned());
        self.call(move |c| {
            let mut statement = c.prepare(&format!(
                "{SELECT} WHERE (?1 = '' OR r.environment = ?1) AND (?2 = '' OR r.state = ?2)
                   AND r.kind NOT IN ('history', 'audit_anchors')
                 ORDER BY r.created_at DESC LIMIT ?3"
            ))?;
            let rows = statement.query_map(params![environment, state, limit], rollout_status)?;
            rows.collect()
        })
        .await
    }

    /// The rollout a job belongs to, as its audit entries name it — without
    /// decoding the plan or the result, since every recorded result asks.
    pub async fn job_rollout(&self, job_id: &str) -> Result<Option<JobRollout>, StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT r.id, r.environment, p.label, r.trace_id, r.actor, r.kind
                 FROM jobs j JOIN rollouts r ON r.id = j.rollout_id
                 LEFT JOIN plans p ON p.plan_id = r.plan_id
                 WHERE j.id = ?1 LIMIT 1",
                params![job_id],
                |row| {
                    Ok(JobRollout {
                        rollout_id: row.get(0)?,
                        environment: row.get(1)?,
                        label: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        trace_id: row.get(3)?,
                        actor: row.get(4)?,
                        kind: row.get(5)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

/// A job's rollout: what its audit entries carry.
pub struct JobRollout {
    pub rollout_id: String,
    pub environment: String,
    pub label: String,
    pub trace_id: String,
    /// Who started the rollout.
    pub actor: String,
    /// `deploy`, `rollback`, … (`JobKind::name`).
    pub kind: String,
}
