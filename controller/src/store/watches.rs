//! Post-deploy watches: their definition, baseline, latest sample and
//! verdict (migration 0008).

use super::db::{self, params, OptionalExtension, Row};
use pgrollout_shared::proto::{WatchSample, WatchSampleJob};
use prost::Message;

use super::leases::{fenced, refused_for_fence, Fence};
use super::{decode_blob, Store, StoreError};

/// A watch as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchRecord {
    pub id: String,
    pub environment: String,
    /// The operator's `<procedure>`.
    pub procedure: String,
    pub spec: WatchSampleJob,
    pub threshold_percent: u32,
    pub every_ms: u64,
    pub min_calls: u64,
    pub min_increase_us: u64,
    /// `--max-time` in microseconds; 0: none.
    pub max_time_us: u64,
    pub created_by: String,
    pub created_at: i64,
    pub ends_at: i64,
    pub cancelled_at: Option<i64>,
    pub cancelled_by: Option<String>,
    pub baseline: WatchSample,
    pub last_sample: Option<WatchSample>,
    pub samples: u64,
    /// `watching`, `alerting` or `blind`.
    pub state: String,
    pub reason: String,
    pub conditions: Vec<String>,
    pub probes_passed: Vec<String>,
    pub failed_samples: u32,
    pub sample_error: String,
}

impl WatchRecord {
    /// Neither cancelled nor past its end.
    pub fn is_live(&self, now: i64) -> bool {
        self.cancelled_at.is_none() && now < self.ends_at
    }
}

/// What one sample attempt changed.
#[derive(Clone, Debug, Default)]
pub struct WatchProgress {
    /// `None` when the attempt produced no sample.
    pub sample: Option<WatchSample>,
    pub state: String,
    pub reason: String,
    pub conditions: Vec<String>,
    pub probes_passed: Vec<String>,
    pub failed_samples: u32,
    pub sample_error: String,
}

const SELECT: &str = "SELECT id, environment, procedure, spec, threshold_percent, every_ms, min_calls,
        min_increase_us, created_by, created_at, ends_at, cancelled_at, cancelled_by, baseline, last_sample,
        samples, state, reason, conditions, probes_passed, failed_samples, sample_error, max_time_us
 FROM watches";

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn watch_record(row: &Row) -> db::Result<WatchRecord> {
    // Blobs written by this controller from messages it built or decoded:
    // one that no longer decodes fails the read, naming the watch.
    let id: String = row.get(0)?;
    let spec: Vec<u8> = row.get(3)?;
    let baseline: Vec<u8> = row.get(13)?;
    let last_sample: Option<Vec<u8>> = row.get(14)?;
    let watch = || format!("watch {id}");
    let spec = decode_blob::<WatchSampleJob>(3, &spec, "definition", watch)?;
    let baseline = decode_blob::<WatchSample>(13, &baseline, "baseline", watch)?;
    let last_sample = last_sample
        .map(|bytes| decode_blob::<WatchSample>(14, &bytes, "latest sample", watch))
        .transpose()?;
    Ok(WatchRecord {
        id,
        environment: row.get(1)?,
        procedure: row.get(2)?,
        spec,
        threshold_percent: row.get(4)?,
        every_ms: row.get::<_, i64>(5)?.max(0) as u64,
        min_calls: row.get::<_, i64>(6)?.max(0) as u64,
        min_increase_us: row.get::<_, i64>(7)?.max(0) as u64,
        created_by: row.get(8)?,
        created_at: row.get(9)?,
        ends_at: row.get(10)?,
        cancelled_at: row.get(11)?,
        cancelled_by: row.get(12)?,
        baseline,
        last_sample,
        samples: row.get::<_, i64>(15)?.max(0) as u64,
        state: row.get(16)?,
        reason: row.get(17)?,
        conditions: lines(&row.get::<_, String>(18)?),
        probes_passed: lines(&row.get::<_, String>(19)?),
        failed_samples: row.get(20)?,
        sample_error: row.get(21)?,
        max_time_us: row.get::<_, i64>(22)?.max(0) as u64,
    })
}

/// Whether `existing` watches one of the names `new` watches.
pub fn covers_any(existing: &WatchRecord, new: &WatchRecord) -> bool {
    new.spec.names.iter().any(|n| {
        existing
            .spec
            .names
            .iter()
            .any(|m| m.schema == n.schema && m.name == n.name)
    })
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Records a new watch, unless a live watch of the same environment
    /// already covers one of its names: then nothing is written and that
    /// watch is returned. Checked and written under one lock, so two
    /// `alert create` at once cannot both succeed.
    pub async fn insert_watch(
        &self,
        watch: &WatchRecord,
    ) -> Result<Option<WatchRecord>, StoreError> {
        let w = watch.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let live: Vec<WatchRecord> = {
                let mut statement = tx.prepare(&format!(
                    "{SELECT} WHERE environment = ?1 AND cancelled_at IS NULL AND ends_at > ?2"
                ))?;
                let rows = statement.query_map(params![w.environment, w.created_at], watch_record)?;
                rows.collect::<db::Result<_>>()?
            };
            if let Some(existing) = live.into_iter().find(|existing| covers_any(existing, &w)) {
                return Ok(Some(existing));
            }
            tx.execute(
                "INSERT INTO watches (id, environment, procedure, spec, threshold_percent, every_ms, min_calls,
                     min_increase_us, created_by, created_at, ends_at, baseline, state, reason, probes_passed,
                     max_time_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    w.id,
                    w.environment,
                    w.procedure,
                    w.spec.encode_to_vec(),
                    w.threshold_percent,
                    as_i64(w.every_ms),
                    as_i64(w.min_calls),
                    as_i64(w.min_increase_us),
                    w.created_by,
                    w.created_at,
                    w.ends_at,
                    w.baseline.encode_to_vec(),
                    w.state,
                    w.reason,
                    w.probes_passed.join("\n"),
                    as_i64(w.max_time_us),
                ],
            )?;
            tx.commit()?;
            Ok(None)
        })
        .await
    }

    pub async fn watch(&self, id: &str) -> Result<Option<WatchRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("{SELECT} WHERE id = ?1"),
                params![id],
                watch_record,
            )
            .optional()
        })
        .await
    }

    /// Watches neither cancelled nor ended at `now`, in every environment
    /// when `environment` is `None`, oldest first.
    pub async fn live_watches(
        &self,
        environment: Option<&str>,
        now: i64,
    ) -> Result<Vec<WatchRecord>, StoreError> {
        let environment = environment.map(str::to_owned);
        self.call(move |c| {
            let mut statement = c.prepare(&format!(
                "{SELECT} WHERE cancelled_at IS NULL AND ends_at > ?1 AND (CAST(?2 AS TEXT) IS NULL OR environment = ?2)
                 ORDER BY created_at, id"
            ))?;
            let rows = statement.query_map(params![now, environment], watch_record)?;
            rows.collect()
        })
        .await
    }

    /// Watches of `environment` (every one when empty), newest first: live
    /// ones, and those that ended or were cancelled after `ended_after`
    /// (0: every one).
    pub async fn list_watches(
        &self,
        environment: &str,
        ended_after: i64,
        limit: u32,
    ) -> Result<Vec<WatchRecord>, StoreError> {
        let environment = environment.to_owned();
        self.call(move |c| {
            let mut statement = c.prepare(&format!(
                "{SELECT} WHERE (?1 = '' OR environment = ?1) AND COALESCE(cancelled_at, ends_at) > ?2
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            ))?;
            let rows = statement.query_map(params![environment, ended_after, limit], watch_record)?;
            rows.collect()
        })
        .await
    }

    /// Records a sample attempt; `false` when the watch was cancelled in the
    /// meantime (nothing is written then). The watches' leader passes its
    /// lease's `fence` (issue 18), checked in the same statement: a sample
    /// taken by a controller that lost the lease is never recorded, and the
    /// answer is [`StoreError::FenceLost`].
    pub async fn record_watch_progress(
        &self,
        id: &str,
        progress: &WatchProgress,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let p = progress.clone();
        let fence = fence.cloned();
        self.call(move |c| {
            let sample = p.sample.as_ref().map(Message::encode_to_vec);
            let (sql, values) = fenced(
                c,
                "UPDATE watches SET last_sample = COALESCE(?2, last_sample),
                        samples = samples + CASE WHEN ?2 IS NULL THEN 0 ELSE 1 END, state = ?3, reason = ?4, conditions = ?5,
                        probes_passed = ?6, failed_samples = ?7, sample_error = ?8
                 WHERE id = ?1 AND cancelled_at IS NULL"
                    .to_owned(),
                params![
                    id,
                    sample,
                    p.state,
                    p.reason,
                    p.conditions.join("\n"),
                    p.probes_passed.join("\n"),
                    p.failed_samples,
                    p.sample_error,
                ]
                .to_vec(),
                fence.as_ref(),
            );
            if c.execute(&sql, &values)? == 1 {
                return Ok(Ok(true));
            }
            Ok(match refused_for_fence(c, fence.as_ref())? {
                Some(lost) => Err(lost),
                None => Ok(false),
            })
        })
        .await?
        .map_err(StoreError::FenceLost)
    }

    /// Cancels a live watch; `false` when there is no such live watch.
    pub async fn cancel_watch(&self, id: &str, by: &str, now: i64) -> Result<bool, StoreError> {
        let (id, by) = (id.to_owned(), by.to_owned());
        self.call(move |c| {
            let updated = c.execute(
                "UPDATE watches SET cancelled_at = ?3, cancelled_by = ?2
                 WHERE id = ?1 AND cancelled_at IS NULL AND ends_at > ?3",
                params![id, by, now],
            )?;
            Ok(updated == 1)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::{FunctionStats, WatchedName};

    fn watch(id: &str, environment: &str, created_at: i64, ends_at: i64) -> WatchRecord {
        WatchRecord {
            id: id.into(),
            environment: environment.into(),
            procedure: "addarc".into(),
            spec: WatchSampleJob {
                watch_id: id.into(),
                names: vec![WatchedName {
                    schema: "public".into(),
                    name: "addarc".into(),
                }],
                probes: Vec::new(),
                source_plans: Vec::new(),
            },
            threshold_percent: 120,
            every_ms: 60_000,
            min_calls: 10,
            min_increase_us: 1_000,
            created_by: "alice".into(),
            created_at,
            ends_at,
            baseline: WatchSample {
                track_functions: "all".into(),
                functions: vec![FunctionStats {
                    identity: "public.addarc(text)".into(),
                    calls: 5,
                    has_stats: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
            state: "watching".into(),
            reason: "baseline taken".into(),
            probes_passed: vec!["public.addarc(text) adds".into()],
            ..Default::default()
        }
    }

    crate::store::conformance::store_test!(
        watches_are_kept_listed_sampled_and_cancelled,
        |store, backend| {
            let first = watch("w-1", "prod", 100, 1_000);
            assert_eq!(store.insert_watch(&first).await.expect("insert"), None);
            assert_eq!(
                store
                    .insert_watch(&watch("w-2", "dev", 200, 300))
                    .await
                    .expect("insert"),
                None
            );
            // A second live watch of the same name in the same environment is refused.
            let twin = store
                .insert_watch(&watch("w-3", "prod", 150, 2_000))
                .await
                .expect("insert");
            assert_eq!(twin.map(|w| w.id).as_deref(), Some("w-1"));
            assert_eq!(store.watch("w-1").await.expect("read"), Some(first.clone()));
            let live = store.live_watches(None, 250).await.expect("live");
            assert_eq!(live.len(), 2);
            let live = store.live_watches(None, 300).await.expect("live");
            assert_eq!(live.iter().map(|w| &w.id).collect::<Vec<_>>(), ["w-1"]);
            assert_eq!(
                store
                    .live_watches(Some("dev"), 250)
                    .await
                    .expect("live")
                    .len(),
                1
            );
            let listed = store.list_watches("", 0, 10).await.expect("list");
            assert_eq!(
                listed.iter().map(|w| &w.id).collect::<Vec<_>>(),
                ["w-2", "w-1"]
            );
            // w-2 ended at 300.
            assert_eq!(
                store.list_watches("", 300, 10).await.expect("list").len(),
                1
            );
            assert_eq!(
                store
                    .list_watches("dev", 299, 10)
                    .await
                    .expect("list")
                    .len(),
                1
            );

            let sample = WatchSample {
                sampled_at_unix_ms: 400,
                ..first.baseline.clone()
            };
            let progress = WatchProgress {
                sample: Some(sample.clone()),
                state: "alerting".into(),
                reason: "slow".into(),
                conditions: vec!["slow public.addarc(text)".into()],
                probes_passed: first.probes_passed.clone(),
                failed_samples: 0,
                sample_error: String::new(),
            };
            assert!(store
                .record_watch_progress("w-1", &progress, None)
                .await
                .expect("record"));
            let failed = WatchProgress {
                sample: None,
                failed_samples: 1,
                sample_error: "no agent".into(),
                ..progress.clone()
            };
            assert!(store
                .record_watch_progress("w-1", &failed, None)
                .await
                .expect("record"));
            let read = store.watch("w-1").await.expect("read").expect("watch");
            assert_eq!(
                read.last_sample,
                Some(sample),
                "a failed attempt keeps the last sample"
            );
            assert_eq!(read.samples, 1);
            assert_eq!(read.conditions, ["slow public.addarc(text)"]);
            assert_eq!(read.sample_error, "no agent");

            assert!(store.cancel_watch("w-1", "bob", 500).await.expect("cancel"));
            assert!(!store
                .cancel_watch("w-1", "bob", 501)
                .await
                .expect("cancel twice"));
            assert!(!store
                .cancel_watch("w-2", "bob", 501)
                .await
                .expect("ended already"));
            assert!(!store
                .record_watch_progress("w-1", &progress, None)
                .await
                .expect("record"));
            let read = store.watch("w-1").await.expect("read").expect("watch");
            assert_eq!(read.cancelled_by.as_deref(), Some("bob"));
            assert!(!read.is_live(501));
        }
    );
}
