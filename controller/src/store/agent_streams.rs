//! Which controller holds each agent's stream, and the jobs waiting for it
//! (issue 18, item 2; migration 0021).
//!
//! Several controllers share a PostgreSQL store and an agent holds one
//! stream, to one of them. A job created on a controller that does not hold
//! its agent is recorded as waiting for that agent (`job_deliveries`); the
//! controller holding the agent takes it by compare-and-set — so it is
//! offered once, by one controller — and offers it on its stream. The
//! controller that created the job follows it here, in the store: its
//! claim, its events, its result, or the agent's decline.

use std::collections::BTreeMap;

use super::db::{params, Dialect, OptionalExtension};
use super::{decode_blob, Store, StoreError};

/// The channel a requested delivery is announced on (PostgreSQL's NOTIFY;
/// the payload is `zone/agent`). Pickers also poll, so a lost notification
/// only delays a job.
pub const DELIVERY_CHANNEL: &str = "pgrollout_deliveries";

/// The channel a job's progress is announced on (PostgreSQL's NOTIFY; the
/// payload is the job id): its claim, an event, its result or a decline
/// (triggers of migration 0022), a side-channel job's answer. Followers
/// also poll, so a lost notification only delays them.
pub const PROGRESS_CHANNEL: &str = "pgrollout_job_progress";

/// An agent's stream as recorded by the controller holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStream {
    pub zone: String,
    pub agent_name: String,
    pub controller_id: String,
    pub stream_epoch: i64,
}

/// A target an agent announced on its stream, with its labels (what a
/// fleet environment's selector matches, issue 24).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamTarget {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// An agent's stream on a live controller, with what the agent announced:
/// what fleet member selection reads of other controllers' agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveStream {
    pub zone: String,
    pub agent_name: String,
    pub controller_id: String,
    pub targets: Vec<StreamTarget>,
}

/// A job waiting for the controller that holds its agent's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub job_id: String,
    pub attempt: u32,
    pub zone: String,
    pub agent_name: String,
}

/// What the store knows of a job followed from another controller.
#[derive(Debug, Default)]
pub struct JobProgress {
    /// The agent claimed it (`claim_job`).
    pub accepted: bool,
    /// Events after the sequence number asked for, in order.
    pub events: Vec<pgrollout_shared::proto::JobEvent>,
    /// The result, once recorded, as the agent wrote it.
    pub result: Option<pgrollout_shared::proto::JobResult>,
    /// The agent declined the offer, saying why.
    pub declined: Option<String>,
}

impl Store {
    /// A connection listening for requested deliveries (PostgreSQL's
    /// LISTEN): each notification's payload is `zone/agent`. `None` on
    /// SQLite, whose one controller offers every job itself.
    pub async fn listen_for_deliveries(
        &self,
    ) -> Option<Result<tokio::sync::mpsc::UnboundedReceiver<String>, StoreError>> {
        let super::Backend::Postgres(pool) = &*self.backend else {
            return None;
        };
        let target = pool.target().clone();
        Some(
            super::db::postgres::listen(&target, DELIVERY_CHANNEL)
                .await
                .map_err(|source| StoreError::Connect {
                    store: target.describe(),
                    source,
                }),
        )
    }

    /// A connection listening for jobs' progress (PostgreSQL's LISTEN on
    /// [`PROGRESS_CHANNEL`]): each notification's payload is a job id.
    /// `None` on SQLite, where no job is followed from afar.
    pub async fn listen_for_progress(
        &self,
    ) -> Option<Result<tokio::sync::mpsc::UnboundedReceiver<String>, StoreError>> {
        let super::Backend::Postgres(pool) = &*self.backend else {
            return None;
        };
        let target = pool.target().clone();
        Some(
            super::db::postgres::listen(&target, PROGRESS_CHANNEL)
                .await
                .map_err(|source| StoreError::Connect {
                    store: target.describe(),
                    source,
                }),
        )
    }

    /// Records that controller `controller_id` now holds the agent's stream;
    /// returns the stream's epoch (one more than the agent's previous one).
    pub async fn record_agent_stream(
        &self,
        zone: &str,
        agent_name: &str,
        controller_id: &str,
        targets: &[StreamTarget],
        now: i64,
    ) -> Result<i64, StoreError> {
        let (zone, agent_name, controller_id) = (
            zone.to_owned(),
            agent_name.to_owned(),
            controller_id.to_owned(),
        );
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let names = names.join("\n");
        let labels: BTreeMap<&str, &BTreeMap<String, String>> = targets
            .iter()
            .map(|t| (t.name.as_str(), &t.labels))
            .collect();
        // A map of strings always serialises.
        let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".to_owned());
        self.call(move |c| {
            c.query_row(
                "INSERT INTO agent_streams (zone, agent_name, controller_id, stream_epoch, targets, connected_at, labels)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)
                 ON CONFLICT (zone, agent_name) DO UPDATE SET controller_id = excluded.controller_id,
                    stream_epoch = agent_streams.stream_epoch + 1, targets = excluded.targets,
                    connected_at = excluded.connected_at, labels = excluded.labels
                 RETURNING stream_epoch",
                params![zone, agent_name, controller_id, names, now, labels],
                |row| row.get(0),
            )
        })
        .await
    }

    /// The stream of epoch `stream_epoch` ended; `false` when a newer stream
    /// of the agent (on any controller) already replaced it.
    pub async fn end_agent_stream(
        &self,
        zone: &str,
        agent_name: &str,
        stream_epoch: i64,
    ) -> Result<bool, StoreError> {
        let (zone, agent_name) = (zone.to_owned(), agent_name.to_owned());
        self.call(move |c| {
            c.execute(
                "DELETE FROM agent_streams WHERE zone = ?1 AND agent_name = ?2 AND stream_epoch = ?3",
                params![zone, agent_name, stream_epoch],
            )
            .map(|deleted| deleted == 1)
        })
        .await
    }

    /// The agent of `zone` serving `target` whose stream a live controller
    /// other than `me` holds (the most recently connected one), if any. A
    /// controller is live while its heartbeat is younger than `dead_after_ms`;
    /// a row written before its current life started (it was killed and
    /// restarted under the same id) is a stream it no longer holds.
    pub async fn remote_agent_stream(
        &self,
        zone: &str,
        target: &str,
        me: &str,
        now: i64,
        dead_after_ms: i64,
    ) -> Result<Option<AgentStream>, StoreError> {
        let (zone, target, me) = (zone.to_owned(), target.to_owned(), me.to_owned());
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT s.zone, s.agent_name, s.controller_id, s.stream_epoch, s.targets
                 FROM agent_streams s JOIN controllers k ON k.id = s.controller_id
                 WHERE s.zone = ?1 AND s.controller_id <> ?2 AND k.heartbeat_at >= ?3
                   AND s.connected_at >= k.started_at
                 ORDER BY s.connected_at DESC",
            )?;
            let rows = statement.query_map(params![zone, me, now - dead_after_ms], |row| {
                let targets: String = row.get(4)?;
                Ok((
                    AgentStream {
                        zone: row.get(0)?,
                        agent_name: row.get(1)?,
                        controller_id: row.get(2)?,
                        stream_epoch: row.get(3)?,
                    },
                    targets,
                ))
            })?;
            for row in rows {
                let (stream, targets) = row?;
                if targets.lines().any(|t| t == target) {
                    return Ok(Some(stream));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Every agent stream a live controller other than `me` holds, with the
    /// targets and labels its agent announced, by zone and agent name:
    /// fleet member selection adds them to the agents connected to `me`.
    /// Liveness as for [`Store::remote_agent_stream`].
    pub async fn live_agent_streams(
        &self,
        me: &str,
        now: i64,
        dead_after_ms: i64,
    ) -> Result<Vec<LiveStream>, StoreError> {
        let me = me.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT s.zone, s.agent_name, s.controller_id, s.targets, s.labels
                 FROM agent_streams s JOIN controllers k ON k.id = s.controller_id
                 WHERE s.controller_id <> ?1 AND k.heartbeat_at >= ?2
                   AND s.connected_at >= k.started_at
                 ORDER BY s.zone, s.agent_name",
            )?;
            let rows = statement.query_map(params![me, now - dead_after_ms], |row| {
                let (names, labels): (String, String) = (row.get(3)?, row.get(4)?);
                // Written by `record_agent_stream`; a row an older
                // controller wrote has '{}': its targets carry no labels.
                let mut labels: BTreeMap<String, BTreeMap<String, String>> =
                    serde_json::from_str(&labels).unwrap_or_default();
                Ok(LiveStream {
                    zone: row.get(0)?,
                    agent_name: row.get(1)?,
                    controller_id: row.get(2)?,
                    targets: names
                        .lines()
                        .filter(|name| !name.is_empty())
                        .map(|name| StreamTarget {
                            name: name.to_owned(),
                            labels: labels.remove(name).unwrap_or_default(),
                        })
                        .collect(),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Records that the job's attempt waits for the controller holding
    /// agent `zone/agent_name`, and announces it (NOTIFY, on commit).
    pub async fn request_delivery(
        &self,
        delivery: &Delivery,
        requested_by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let d = delivery.clone();
        let requested_by = requested_by.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO job_deliveries (job_id, attempt, zone, agent_name, requested_by, requested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![d.job_id, d.attempt, d.zone, d.agent_name, requested_by, now],
            )?;
            if tx.dialect() == Dialect::Postgres {
                tx.query_row(
                    "SELECT pg_notify(?1, ?2)",
                    params![DELIVERY_CHANNEL, format!("{}/{}", d.zone, d.agent_name)],
                    |_| Ok(()),
                )?;
            }
            tx.commit()
        })
        .await
    }

    /// Deliveries nobody took yet whose job is still offered.
    pub async fn waiting_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.call(move |c| {
            let mut statement = c.prepare(
                "SELECT d.job_id, d.attempt, d.zone, d.agent_name
                 FROM job_deliveries d JOIN jobs j ON j.id = d.job_id AND j.attempt = d.attempt
                 WHERE d.taken_by IS NULL AND j.state = 'offered'
                 ORDER BY d.requested_at",
            )?;
            let rows = statement.query_map(params![], |row| {
                Ok(Delivery {
                    job_id: row.get(0)?,
                    attempt: row.get(1)?,
                    zone: row.get(2)?,
                    agent_name: row.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Takes a waiting delivery for controller `me` (compare-and-set: one
    /// controller wins) and returns the job's recorded offer to send; `None`
    /// when another took it, it was withdrawn, or the job is no longer
    /// offered.
    pub async fn take_delivery(
        &self,
        job_id: &str,
        attempt: u32,
        me: &str,
        now: i64,
    ) -> Result<Option<pgrollout_shared::proto::JobOffer>, StoreError> {
        let (job_id, me) = (job_id.to_owned(), me.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let taken = tx.execute(
                "UPDATE job_deliveries SET taken_by = ?3, taken_at = ?4
                 WHERE job_id = ?1 AND attempt = ?2 AND taken_by IS NULL
                   AND EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND attempt = ?2 AND state = 'offered')",
                params![job_id, attempt, me, now],
            )?;
            if taken != 1 {
                return Ok(None);
            }
            let offer: Option<Vec<u8>> = tx.query_row(
                "SELECT offer FROM jobs WHERE id = ?1 AND attempt = ?2",
                params![job_id, attempt],
                |row| row.get(0),
            )?;
            let Some(bytes) = offer else {
                // Recorded without an offer: nothing to send; the requester
                // times the job out.
                return Ok(None);
            };
            let offer = decode_blob(0, &bytes, "job offer", || {
                format!("job {job_id} attempt {attempt}")
            })?;
            tx.commit()?;
            Ok(Some(offer))
        })
        .await
    }

    /// The requester gave up waiting (compare-and-set): `false` if a
    /// controller already took the delivery.
    pub async fn withdraw_delivery(&self, job_id: &str, attempt: u32) -> Result<bool, StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE job_deliveries SET taken_by = '' WHERE job_id = ?1 AND attempt = ?2 AND taken_by IS NULL",
                params![job_id, attempt],
            )
            .map(|changed| changed == 1)
        })
        .await
    }

    /// The agent declined a delivered offer: recorded for the requester.
    /// `false` when the job was not a delivery (a local offer's rollout
    /// hears it directly).
    pub async fn record_delivery_declined(
        &self,
        job_id: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let (job_id, reason) = (job_id.to_owned(), reason.to_owned());
        self.call(move |c| {
            c.execute(
                "UPDATE job_deliveries SET declined = ?3 WHERE job_id = ?1 AND attempt = ?2 AND declined IS NULL",
                params![job_id, attempt, reason],
            )
            .map(|changed| changed == 1)
        })
        .await
    }

    /// A job's progress after event `after_seq`, read by the controller
    /// following it from afar.
    pub async fn job_progress(
        &self,
        job_id: &str,
        attempt: u32,
        after_seq: u64,
    ) -> Result<JobProgress, StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| {
            let mut progress = JobProgress::default();
            let row = c
                .query_row(
                    "SELECT j.accepted_at IS NOT NULL, j.result, d.declined
                     FROM jobs j LEFT JOIN job_deliveries d ON d.job_id = j.id AND d.attempt = j.attempt
                     WHERE j.id = ?1 AND j.attempt = ?2",
                    params![job_id, attempt],
                    |row| {
                        Ok((
                            row.get::<_, bool>(0)?,
                            row.get::<_, Option<Vec<u8>>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                        ))
                    },
                )
                .optional()?;
            let Some((accepted, result, declined)) = row else {
                return Ok(progress);
            };
            progress.accepted = accepted;
            progress.declined = declined;
            // The result was read above, the events now: every event the
            // agent sent before its result is in this read with it.
            let mut statement = c.prepare(
                "SELECT seq, step, status, message, duration_ms, at, detail FROM job_events
                 WHERE job_id = ?1 AND attempt = ?2 AND seq > ?3 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![job_id, attempt, after_seq as i64], |row| {
                let status: String = row.get(2)?;
                let seq = row.get::<_, i64>(0)?;
                // The smoke reports and progress counts, when it had any.
                let detail = row
                    .get::<_, Option<Vec<u8>>>(6)?
                    .map(|bytes| {
                        decode_blob::<pgrollout_shared::proto::JobEvent>(6, &bytes, "job event detail", || {
                            format!("job {job_id} attempt {attempt} event {seq}")
                        })
                    })
                    .transpose()?
                    .unwrap_or_default();
                Ok(pgrollout_shared::proto::JobEvent {
                    smoke: detail.smoke,
                    done: detail.done,
                    total: detail.total,
                    job_id: job_id.clone(),
                    attempt,
                    seq: seq as u64,
                    step: row.get(1)?,
                    status: pgrollout_shared::proto::StepStatus::from_str_name(&status)
                        .map_or(0, |s| s as i32),
                    message: row.get(3)?,
                    duration_ms: row.get::<_, i64>(4)? as u64,
                    at_unix_ms: row.get(5)?,
                })
            })?;
            progress.events = rows.collect::<super::db::Result<_>>()?;
            if let Some(bytes) = result {
                progress.result = Some(decode_blob(1, &bytes, "job result", || {
                    format!("job {job_id} attempt {attempt}")
                })?);
            }
            Ok(progress)
        })
        .await
    }
}
