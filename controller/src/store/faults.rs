//! What the store needs to survive faults (issue 8): the offer kept for a
//! retry, jobs left in doubt by a controller restart or a lost agent, the
//! reconciliation of an agent's Hello, and an operator's resolution.

use super::db::{params, OptionalExtension};
use pgrollout_shared::proto::JobOffer;

use super::{decode_blob, state, Store, StoreError};

/// A job the store believes an agent holds (offered, running or unknown).
#[derive(Debug, Clone)]
pub struct HeldJob {
    pub job_id: String,
    pub attempt: u32,
    pub rollout_id: String,
    /// Whether the agent's Accept arrived.
    pub accepted: bool,
}

/// What a starting controller found of its predecessor's jobs.
#[derive(Debug, Default)]
pub struct Interrupted {
    /// Offered to an agent or running on one: `unknown` until it reports.
    pub in_doubt: Vec<HeldJob>,
    /// Recorded but never offered to any agent: failed, nothing ran.
    pub never_offered: Vec<HeldJob>,
}

/// Why a job recorded but never offered failed (see `interrupt_running`).
pub const NEVER_OFFERED: &str =
    "the controller stopped after recording this rollout but before offering its job to any agent; nothing ran";

/// A rollout's latest job, as a retry needs it.
#[derive(Debug, Clone)]
pub struct LatestJob {
    pub job_id: String,
    pub attempt: u32,
    pub rollout_state: String,
    /// `None`: recorded by a controller that did not keep offers.
    pub offer: Option<JobOffer>,
    pub environment: String,
}

impl Store {
    /// Keeps the offer as sent to `agent`, so a retry can send the same job
    /// again and the agent's next Hello can be checked against it.
    pub async fn record_offer(
        &self,
        job_id: &str,
        attempt: u32,
        agent: &str,
        offer: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (job_id, agent) = (job_id.to_owned(), agent.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET offer = ?3, agent_name = ?4 WHERE id = ?1 AND attempt = ?2",
                params![job_id, attempt, offer, agent],
            )
            .map(|_| ())
        })
        .await
    }

    /// At start-up: every job that was offered or running when the previous
    /// controller stopped is now in doubt. Nobody follows it any more, so it
    /// becomes `unknown` until its agent reconnects and reports.
    ///
    /// Except a job recorded but never offered: the offer names its agent in
    /// the store before it is sent (`record_offer`, `new_attempt`), so a job
    /// with no agent was never sent anywhere. No agent will ever report it,
    /// and nothing ran: it fails at once instead of waiting, `unknown`, for
    /// an operator.
    pub async fn interrupt_running(&self, now: i64) -> Result<Interrupted, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut interrupted = Interrupted::default();
            {
                let mut statement = tx.prepare(
                    "SELECT id, attempt, rollout_id, state = 'offered' AND agent_name IS NULL
                     FROM jobs WHERE state IN ('offered', 'running') ORDER BY offered_at",
                )?;
                let rows = statement.query_map(params![], |row| {
                    let job = HeldJob {
                        job_id: row.get(0)?,
                        attempt: row.get(1)?,
                        rollout_id: row.get(2)?,
                        accepted: true,
                    };
                    Ok((job, row.get::<_, bool>(3)?))
                })?;
                for row in rows {
                    let (job, never_offered) = row?;
                    if never_offered {
                        interrupted.never_offered.push(job);
                    } else {
                        interrupted.in_doubt.push(job);
                    }
                }
            }
            super::controllers::settle(
                &tx,
                &interrupted,
                now,
                "the controller restarted while this job was out; unknown until the agent reconnects and reports",
            )?;
            tx.commit()?;
            Ok(interrupted)
        })
        .await
    }

    /// Jobs the store believes `agent` of `zone` holds: claimed by it and
    /// not finished.
    pub async fn jobs_held_by(&self, agent: &str, zone: &str) -> Result<Vec<HeldJob>, StoreError> {
        let (agent, zone) = (agent.to_owned(), zone.to_owned());
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT id, attempt, rollout_id, accepted_at IS NOT NULL FROM jobs
                 WHERE agent_name = ?1 AND zone = ?2 AND state IN ('offered', 'running', 'unknown')",
            )?;
            let rows = statement.query_map(params![agent, zone], |row| {
                Ok(HeldJob {
                    job_id: row.get(0)?,
                    attempt: row.get(1)?,
                    rollout_id: row.get(2)?,
                    accepted: row.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// An agent's Hello says it still runs this job: it is `running` again.
    /// `false` if the store does not know the job as this agent's.
    pub async fn reattach_job(
        &self,
        job_id: &str,
        attempt: u32,
        agent: &str,
        zone: &str,
    ) -> Result<bool, StoreError> {
        let (job_id, agent, zone) = (job_id.to_owned(), agent.to_owned(), zone.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let updated = tx.execute(
                // A job offered just before a controller restart has no claim
                // recorded: the agent that says it runs it claims it now.
                "UPDATE jobs SET state = 'running', finished_at = NULL, agent_name = ?3
                 WHERE id = ?1 AND attempt = ?2 AND zone = ?4 AND state IN ('unknown', 'running')
                   AND (agent_name = ?3 OR agent_name IS NULL)",
                params![job_id, attempt, agent, zone],
            )?;
            if updated == 1 {
                tx.execute(
                    "UPDATE rollouts SET state = 'running', exit_code = NULL, finished_at = NULL,
                        message = NULL
                     WHERE id = (SELECT rollout_id FROM jobs WHERE id = ?1 AND attempt = ?2) AND state = ?3",
                    params![job_id, attempt, state::UNKNOWN],
                )?;
            }
            tx.commit()?;
            Ok(updated == 1)
        })
        .await
    }

    /// The latest job of a rollout, for `retry`.
    pub async fn latest_job(&self, rollout_id: &str) -> Result<Option<LatestJob>, StoreError> {
        let rollout_id = rollout_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT j.id, j.attempt, r.state, j.offer, r.environment
                 FROM rollouts r JOIN jobs j ON j.rollout_id = r.id
                 WHERE r.id = ?1 ORDER BY j.attempt DESC LIMIT 1",
                params![rollout_id],
                |row| {
                    let offer: Option<Vec<u8>> = row.get(3)?;
                    let job_id: String = row.get(0)?;
                    let offer = offer
                        .map(|bytes| {
                            decode_blob::<JobOffer>(3, &bytes, "offer", || format!("job {job_id}"))
                        })
                        .transpose()?;
                    Ok(LatestJob {
                        job_id,
                        attempt: row.get(1)?,
                        rollout_state: row.get(2)?,
                        offer,
                        environment: row.get(4)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records a new attempt of a rollout's job (a retry), offered now to `agent`.
    pub async fn new_attempt(
        &self,
        rollout_id: &str,
        job_id: &str,
        attempt: u32,
        agent: &str,
        offer: Vec<u8>,
        now: i64,
    ) -> Result<(), StoreError> {
        let (rollout_id, job_id, agent) =
            (rollout_id.to_owned(), job_id.to_owned(), agent.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            // The earlier attempt is settled: its agent may still report it,
            // and that report is kept, but the rollout follows the new one.
            tx.execute(
                "UPDATE jobs SET state = 'finished', finished_at = ?3
                 WHERE id = ?1 AND attempt < ?2 AND state <> 'finished'",
                params![job_id, attempt, now],
            )?;
            tx.execute(
                "INSERT INTO jobs (id, attempt, rollout_id, kind, zone, target, state, offered_at, offer, agent_name)
                 SELECT id, ?2, rollout_id, kind, zone, target, 'offered', ?4, ?5, ?6
                 FROM jobs WHERE id = ?1 AND attempt + 1 = ?2 AND rollout_id = ?3",
                params![job_id, attempt, rollout_id, now, offer, agent],
            )?;
            tx.execute(
                "UPDATE rollouts SET state = 'running', exit_code = NULL, finished_at = NULL, message = NULL
                 WHERE id = ?1",
                params![rollout_id],
            )?;
            tx.commit()
        })
        .await
    }

    /// An operator's verdict on a rollout in doubt: `succeeded` or `failed`,
    /// with the reason. `false` if the rollout is not `unknown`.
    pub async fn resolve_rollout(
        &self,
        rollout_id: &str,
        verdict: &'static str,
        message: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (rollout_id, message) = (rollout_id.to_owned(), message.to_owned());
        let exit_code = if verdict == state::SUCCEEDED { 0 } else { 2 };
        self.call(move |c| {
            let tx = c.transaction()?;
            let updated = tx.execute(
                "UPDATE rollouts SET state = ?2, exit_code = ?3, message = ?4, finished_at = ?5
                 WHERE id = ?1 AND state = ?6",
                params![rollout_id, verdict, exit_code, message, now, state::UNKNOWN],
            )?;
            if updated == 1 {
                tx.execute(
                    "UPDATE jobs SET state = 'finished', finished_at = ?2 WHERE rollout_id = ?1 AND state <> 'finished'",
                    params![rollout_id, now],
                )?;
            }
            tx.commit()?;
            Ok(updated == 1)
        })
        .await
    }
}
