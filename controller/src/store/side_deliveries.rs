//! Side-channel jobs waiting for the controller that holds their agent's
//! stream (issue 18, item 2; migration 0022).
//!
//! A watch's sample, a drift scan and the audit anchors' read record no
//! rollout and no job: only their answer matters, to the controller that
//! asked. When another controller holds the agent, the job waits here with
//! its offer; that controller takes it by compare-and-set (offered once,
//! never after it expired), offers it, and writes the agent's answer once;
//! the requester reads the answer and deletes the row. A row deleted before
//! it was taken is withdrawn: the compare-and-set finds nothing to take.

use super::agent_streams::{DELIVERY_CHANNEL, PROGRESS_CHANNEL};
use super::db::{params, Dialect, OptionalExtension};
use super::{decode_blob, Store, StoreError};

/// A side-channel job waiting for the controller holding its agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideDelivery {
    pub job_id: String,
    pub zone: String,
    pub agent_name: String,
}

/// What the controller holding the agent recorded of a side-channel job.
#[derive(Clone, Debug, PartialEq)]
pub enum SideAnswer {
    /// The agent's result, as it wrote it.
    Result(Box<pgrollout_shared::proto::JobResult>),
    /// The agent declined the offer, saying why.
    Declined(String),
    /// The holder could not get an answer (the agent left before it was
    /// asked, or did not answer in time).
    Failed(String),
}

impl Store {
    /// Records that side-channel job `delivery` waits, until `expires_at`,
    /// for the controller holding its agent, with its encoded offer; and
    /// announces it on the pickers' channel (NOTIFY, on commit).
    pub async fn request_side_delivery(
        &self,
        delivery: &SideDelivery,
        offer: Vec<u8>,
        requested_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let d = delivery.clone();
        let requested_by = requested_by.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO side_deliveries (job_id, zone, agent_name, offer, requested_by, requested_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![d.job_id, d.zone, d.agent_name, offer, requested_by, now, expires_at],
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

    /// Side-channel jobs nobody took yet that have not expired at `now`;
    /// expired rows nobody will read any more (their requester gave up long
    /// ago, or died) are deleted on the way.
    pub async fn waiting_side_deliveries(&self, now: i64) -> Result<Vec<SideDelivery>, StoreError> {
        self.call(move |c| {
            // An hour past its expiry no requester waits for a row.
            c.execute(
                "DELETE FROM side_deliveries WHERE expires_at < ?1",
                params![now - 3_600_000],
            )?;
            let mut statement = c.prepare(
                "SELECT job_id, zone, agent_name FROM side_deliveries
                 WHERE taken_by IS NULL AND expires_at > ?1 ORDER BY requested_at",
            )?;
            let rows = statement.query_map(params![now], |row| {
                Ok(SideDelivery {
                    job_id: row.get(0)?,
                    zone: row.get(1)?,
                    agent_name: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Takes a waiting side-channel job for controller `me` (compare-and-set:
    /// one controller wins, and only before it expires) and returns its offer
    /// to send; `None` when another took it, it was withdrawn or it expired.
    pub async fn take_side_delivery(
        &self,
        job_id: &str,
        me: &str,
        now: i64,
    ) -> Result<Option<pgrollout_shared::proto::JobOffer>, StoreError> {
        let (job_id, me) = (job_id.to_owned(), me.to_owned());
        self.call(move |c| {
            let offer: Option<Vec<u8>> = c
                .query_row(
                    "UPDATE side_deliveries SET taken_by = ?2, taken_at = ?3
                     WHERE job_id = ?1 AND taken_by IS NULL AND expires_at > ?3
                     RETURNING offer",
                    params![job_id, me, now],
                    |row| row.get(0),
                )
                .optional()?;
            offer
                .map(|bytes| {
                    decode_blob(0, &bytes, "side-channel job offer", || {
                        format!("side delivery {job_id}")
                    })
                })
                .transpose()
        })
        .await
    }

    /// The holder's answer to a side-channel job, written once (a second
    /// answer — a replayed result — is dropped: `false`), announced on
    /// [`PROGRESS_CHANNEL`] with the job id. `false` also when the requester already gave up
    /// and deleted the row.
    pub async fn record_side_answer(
        &self,
        job_id: &str,
        answer: &SideAnswer,
    ) -> Result<bool, StoreError> {
        let job_id = job_id.to_owned();
        let (result, declined, failure) = match answer {
            SideAnswer::Result(result) => {
                (Some(prost::Message::encode_to_vec(&**result)), None, None)
            }
            SideAnswer::Declined(reason) => (None, Some(reason.clone()), None),
            SideAnswer::Failed(why) => (None, None, Some(why.clone())),
        };
        self.call(move |c| {
            let tx = c.transaction()?;
            let written = tx.execute(
                "UPDATE side_deliveries SET answer = ?2, declined = ?3, failure = ?4
                 WHERE job_id = ?1 AND answer IS NULL AND declined IS NULL AND failure IS NULL",
                params![job_id, result, declined, failure],
            )?;
            if written == 1 && tx.dialect() == Dialect::Postgres {
                tx.query_row(
                    "SELECT pg_notify(?1, ?2)",
                    params![PROGRESS_CHANNEL, job_id],
                    |_| Ok(()),
                )?;
            }
            tx.commit()?;
            Ok(written == 1)
        })
        .await
    }

    /// The answer recorded for side-channel job `job_id`, if any yet.
    pub async fn side_answer(&self, job_id: &str) -> Result<Option<SideAnswer>, StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| {
            let row = c
                .query_row(
                    "SELECT answer, declined, failure FROM side_deliveries WHERE job_id = ?1",
                    params![job_id],
                    |row| {
                        Ok((
                            row.get::<_, Option<Vec<u8>>>(0)?,
                            row.get::<_, Option<String>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                        ))
                    },
                )
                .optional()?;
            Ok(match row {
                Some((Some(bytes), _, _)) => Some(SideAnswer::Result(Box::new(decode_blob(
                    0,
                    &bytes,
                    "side-channel job answer",
                    || format!("side delivery {job_id}"),
                )?))),
                Some((None, Some(reason), _)) => Some(SideAnswer::Declined(reason)),
                Some((None, None, Some(why))) => Some(SideAnswer::Failed(why)),
                _ => None,
            })
        })
        .await
    }

    /// The requester is done with side-channel job `job_id` (answered or
    /// given up): its row goes. `true` when nobody had taken it yet — it is
    /// withdrawn and will never be offered.
    pub async fn end_side_delivery(&self, job_id: &str) -> Result<bool, StoreError> {
        let job_id = job_id.to_owned();
        self.call(move |c| {
            let untaken: Option<bool> = c
                .query_row(
                    "DELETE FROM side_deliveries WHERE job_id = ?1 RETURNING taken_by IS NULL",
                    params![job_id],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(untaken.unwrap_or(false))
        })
        .await
    }
}
