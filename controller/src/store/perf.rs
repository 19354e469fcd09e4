//! Performance probes: recorded when an agent reports them, read by the
//! performance gate (migrations 0007, 0012). A probe that failed is recorded
//! too, with its error: the gate refuses it by name.

use super::db::{params, OptionalExtension};
use crate::domain::result_payload::PerfProbe;

use super::{Store, StoreError};

/// One routine's recorded probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedProbe {
    pub rollout_id: String,
    pub runs: u32,
    /// `None`: the routine is new, there was nothing to compare with.
    pub old_median_us: Option<u64>,
    pub new_median_us: u64,
    pub baseline: String,
    /// The target's definition hash timed as the old one ('' for none).
    pub baseline_sha256: String,
    /// Why the probe could not measure ('' when it measured).
    pub error: String,
}

impl Store {
    /// Records the probes of a job's result against its rollout's plan and
    /// environment, failed ones with their error. Returns how many were
    /// recorded.
    pub async fn record_perf_probes(
        &self,
        job_id: &str,
        reports: &[PerfProbe],
        now: i64,
    ) -> Result<usize, StoreError> {
        let job_id = job_id.to_owned();
        let reports = reports.to_vec();
        self.call(move |c| {
            let tx = c.transaction()?;
            let rollout: Option<(String, String, String)> = tx
                .query_row(
                    "SELECT r.id, r.plan_id, r.environment FROM jobs j JOIN rollouts r ON r.id = j.rollout_id
                     WHERE j.id = ?1 LIMIT 1",
                    params![job_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((rollout_id, plan_id, environment)) = rollout else {
                return Ok(0);
            };
            for report in &reports {
                let old = report
                    .old_median_us
                    .map(|us| i64::try_from(us).unwrap_or(i64::MAX));
                tx.execute(
                    "INSERT INTO perf_probes (plan_id, environment, routine, rollout_id, call_sql, runs,
                                              old_median_us, new_median_us, baseline, recorded_at,
                                              target_environment, baseline_sha256, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        plan_id,
                        environment,
                        report.routine,
                        rollout_id,
                        report.call_sql,
                        report.runs,
                        old,
                        i64::try_from(report.new_median_us).unwrap_or(i64::MAX),
                        report.baseline,
                        now,
                        report.target_environment,
                        report.baseline_sha256,
                        report.error
                    ],
                )?;
            }
            tx.commit()?;
            Ok(reports.len())
        })
        .await
    }

    /// The latest probe of `routine` for exactly this plan in `environment`
    /// that timed what `target` runs as the old definition.
    pub async fn latest_perf_probe(
        &self,
        plan_id: &str,
        environment: &str,
        routine: &str,
        target: &str,
    ) -> Result<Option<RecordedProbe>, StoreError> {
        let (plan_id, environment, routine, target) = (
            plan_id.to_owned(),
            environment.to_owned(),
            routine.to_owned(),
            target.to_owned(),
        );
        self.call(move |c| {
            c.query_row(
                "SELECT rollout_id, runs, old_median_us, new_median_us, baseline, baseline_sha256, error
                 FROM perf_probes
                 WHERE plan_id = ?1 AND environment = ?2 AND routine = ?3 AND target_environment = ?4
                 ORDER BY id DESC LIMIT 1",
                params![plan_id, environment, routine, target],
                |row| {
                    Ok(RecordedProbe {
                        rollout_id: row.get(0)?,
                        runs: row.get(1)?,
                        old_median_us: row
                            .get::<_, Option<i64>>(2)?
                            .map(|v| u64::try_from(v).unwrap_or(0)),
                        new_median_us: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        baseline: row.get(4)?,
                        baseline_sha256: row.get(5)?,
                        error: row.get(6)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}
