//! Performance probes (SEED.md: "Performance test passed (≤120% baseline)"):
//! each routine's `[perf]` call, timed K times on the OLD definition and K
//! times on the NEW one. Each set runs in its own transaction that is rolled
//! back, each call in a savepoint that is rolled back, and one untimed call
//! per set warms the caches first; the medians go back to the controller,
//! which records them for the performance gate.
//!
//! The OLD definition, when the controller names target environments (the
//! environments promoted from this one whose performance gate reads these
//! probes — PROD): the version each target runs now, timed here in the same
//! run as the new one, once per target (issue 23). A routine the target does
//! not run has no baseline. Without targets, it is the one this plan
//! replaces in this database: the previous definition of this plan's latest
//! deploy row in the ledger when the plan is already deployed here (the
//! probe then runs after the deploy), otherwise the live definition.
//!
//! The probes' own calls are kept out of `pg_stat_user_functions`, like the
//! smoke tests', so a post-deploy watch does not count them.

use std::time::{Duration, Instant};

use pgrollout_shared::perf_target::PerfTarget;
use pgrollout_shared::proto::{PerfReport, StepStatus};
use pgrollout_shared::routine::{set_local_search_path_sql, PerfProbe, Routine};
use pgrollout_shared::test_reports::{perf_line, perf_refusal};

use super::apply;
use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::{self, describe_error, TargetConnection, RESET_TO_AGENT_SEARCH_PATH};

/// Measures as one `perf-probe` step whose message shows every median: once
/// per target, or once against this database's own old definitions. The
/// step fails (❌) when a probe failed or a target's gate will refuse it.
pub async fn probe_step(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    targets: &[PerfTarget],
) -> Result<Vec<PerfReport>, JobFailure> {
    ctx.event("perf-probe", StepStatus::Started, "", 0, Vec::new());
    let started = Instant::now();
    let runs: Vec<Option<&PerfTarget>> = if targets.is_empty() {
        vec![None]
    } else {
        targets.iter().map(Some).collect()
    };
    let mut measured = Ok(Vec::new());
    for target in runs {
        match measure(ctx, conn, routines, target).await {
            Ok(reports) => {
                if let Ok(all) = &mut measured {
                    all.extend(reports);
                }
            }
            Err(failure) => {
                measured = Err(failure);
                break;
            }
        }
    }
    let elapsed = crate::jobs::context::millis(started.elapsed());
    match &measured {
        Ok(reports) => {
            let refused = reports.iter().any(|r| perf_refusal(r).is_some());
            let message = reports
                .iter()
                .map(perf_line)
                .collect::<Vec<_>>()
                .join(" | ");
            let status = if refused {
                StepStatus::Failed
            } else {
                StepStatus::Succeeded
            };
            ctx.event("perf-probe", status, message, elapsed, Vec::new());
        }
        Err(failure) => ctx.failed("perf-probe", failure, elapsed),
    }
    measured
}

/// Where a routine's OLD definition comes from.
struct Baseline {
    definition: Option<String>,
    source: String,
    /// The target's definition hash (empty without a target, or when the
    /// target does not run the routine).
    sha256: String,
}

/// A transaction whose calls PostgreSQL does not count for a watch.
async fn begin_uncounted(conn: &TargetConnection) -> Result<(), JobFailure> {
    crate::jobs::context::txn_seal::begin(conn).await?;
    crate::sql::watch_stats::stop_counting_calls(&conn.client)
        .await
        .map(|_| ())
        .map_err(|e| JobFailure::database("cannot start a probe", e))
}

/// The OLD definition of each routine: the version `target` runs now.
fn target_baselines(routines: &[Routine], target: &PerfTarget) -> Vec<Baseline> {
    let environment = &target.environment;
    routines
        .iter()
        .map(
            |routine| match target.baseline_of(&routine.identity.to_string()) {
                None => Baseline {
                    definition: None,
                    source: format!("new in {environment}"),
                    sha256: String::new(),
                },
                Some(version) => Baseline {
                    definition: version.create_sql.clone(),
                    source: version.source.clone(),
                    sha256: version.definition_sha256.clone(),
                },
            },
        )
        .collect()
}

async fn measure(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    target: Option<&PerfTarget>,
) -> Result<Vec<PerfReport>, JobFailure> {
    let live = apply::snapshot(conn, routines, &[]).await?;
    let baselines = match target {
        Some(target) => target_baselines(routines, target),
        None => baselines(ctx, conn, &live).await?,
    };
    let probed: Vec<usize> = (0..routines.len())
        .filter(|&i| routines[i].perf_probe.is_some())
        .collect();

    // The OLD set: every routine as it was before the plan (as the target
    // runs it, when there is one).
    begin_uncounted(conn).await?;
    let mut restore_error = None;
    for ((baseline, now), routine) in baselines.iter().zip(&live).zip(routines) {
        if let Some(old) = &baseline.definition {
            if Some(old) != now.definition.as_ref() {
                // An earlier plan's statement resolves its names as its
                // routine's CREATE did; the transaction is rolled back.
                let replayed = async {
                    let set = set_local_search_path_sql(&routine.search_path);
                    conn.client.batch_execute(&set).await?;
                    conn.client.execute_typed(old.as_str(), &[]).await
                }
                .await;
                if let Err(error) = replayed {
                    restore_error = Some(format!(
                        "cannot put back the old definition ({}): {}",
                        baseline.source,
                        describe_error(&error, None)
                    ));
                    break;
                }
            }
        }
    }
    // Back to the agent's own path (after a failed replay the transaction
    // refuses this too, and the error reported is the replay's).
    let _ = conn.client.batch_execute(RESET_TO_AGENT_SEARCH_PATH).await;
    let mut old_times = Vec::new();
    for &i in &probed {
        let probe = routines[i].perf_probe.as_ref().expect("probed");
        old_times.push(match (&restore_error, &baselines[i].definition) {
            (Some(error), _) => Err(error.clone()),
            (None, None) => Ok(None),
            (None, Some(_)) => time_runs(conn, &routines[i], probe)
                .await
                .map(Some)
                .map_err(|e| format!("the call failed on the old definition: {e}")),
        });
    }
    confirm_then_rollback(conn).await?;

    // The NEW set: every routine of the plan applied, in deploy order.
    begin_uncounted(conn).await?;
    let mut apply_error = None;
    for routine in routines {
        if let Err(error) = apply::create_in_its_path(conn, routine).await {
            apply_error = Some(format!(
                "cannot apply {}: {}",
                routine.identity,
                describe_error(&error, Some(&routine.create_sql))
            ));
            break;
        }
    }
    let mut new_times = Vec::new();
    for &i in &probed {
        let probe = routines[i].perf_probe.as_ref().expect("probed");
        new_times.push(match &apply_error {
            Some(error) => Err(error.clone()),
            None => time_runs(conn, &routines[i], probe)
                .await
                .map_err(|e| format!("the call failed on the new definition: {e}")),
        });
    }
    confirm_then_rollback(conn).await?;

    Ok(probed
        .iter()
        .zip(old_times.into_iter().zip(new_times))
        .map(|(&i, (old, new))| {
            let probe = routines[i].perf_probe.as_ref().expect("probed");
            let mut report = PerfReport {
                routine: routines[i].identity.to_string(),
                call_sql: probe.call_sql.clone(),
                runs: probe.runs,
                baseline: baselines[i].source.clone(),
                target_environment: target.map(|t| t.environment.clone()).unwrap_or_default(),
                baseline_sha256: baselines[i].sha256.clone(),
                threshold_percent: target.map_or(0, |t| t.threshold_percent),
                ..Default::default()
            };
            match (old, new) {
                (Ok(old), Ok(new)) => {
                    report.has_baseline = old.is_some();
                    report.old_median_us = old.map_or(0, |mut t| median_us(&mut t));
                    report.new_median_us = median_us(&mut new.clone());
                }
                (Err(error), _) | (_, Err(error)) => report.error = error,
            }
            report
        })
        .collect())
}

/// Ends a set: confirms the calls left the sealed transaction in place
/// (`txn_seal`), then rolls it back; a call that ended it stops the job.
async fn confirm_then_rollback(conn: &TargetConnection) -> Result<(), JobFailure> {
    let sealed = crate::jobs::context::txn_seal::confirm(conn).await;
    let _ = conn.client.batch_execute("ROLLBACK").await;
    sealed.map_err(|why| {
        JobFailure::deploy(crate::jobs::context::txn_seal::escaped_message(
            "a [perf] probe call",
            &why,
        ))
    })
}

/// The OLD definition of each routine: this plan's latest deploy row in the
/// ledger says what it replaced; without one, what is live now is old.
async fn baselines(
    ctx: &JobContext,
    conn: &TargetConnection,
    live: &[sql::RoutineSnapshot],
) -> Result<Vec<Baseline>, JobFailure> {
    let identities: Vec<String> = live.iter().filter_map(|s| s.identity.clone()).collect();
    let history = sql::rows_for_identities(&conn.client, &ctx.target.ledger_schema, &identities)
        .await
        .map_err(|e| JobFailure::database("cannot read the ledger", e))?;
    let short = &ctx.job.plan_id[..ctx.job.plan_id.len().min(12)];
    Ok(live
        .iter()
        .map(|snapshot| {
            let Some(identity) = &snapshot.identity else {
                return Baseline {
                    definition: None,
                    source: "new routine".into(),
                    sha256: String::new(),
                };
            };
            let deployed = history.iter().rev().find(|row| {
                &row.identity == identity
                    && row.plan_id == ctx.job.plan_id
                    && row.action == "deploy"
            });
            match deployed {
                Some(row) => Baseline {
                    sha256: String::new(),
                    definition: row.previous.definition.clone(),
                    source: if row.previous.definition.is_some() {
                        format!("ledger #{}, before plan {short}", row.id)
                    } else {
                        format!("created by plan {short} (ledger #{})", row.id)
                    },
                },
                None => Baseline {
                    definition: snapshot.definition.clone(),
                    source: "live definition".into(),
                    sha256: String::new(),
                },
            }
        })
        .collect())
}

/// `runs` timed calls after one untimed warm-up call, each in a savepoint
/// that is rolled back, so calls that write leave nothing behind and do not
/// change what the next call sees. The call resolves its names with its
/// routine's search path, as the smoke tests do; the agent's own path comes
/// back afterwards.
async fn time_runs(
    conn: &TargetConnection,
    routine: &Routine,
    probe: &PerfProbe,
) -> Result<Vec<Duration>, String> {
    let (call, runs) = (probe.call_sql.as_str(), probe.runs);
    let sql_error = |e: tokio_postgres::Error| describe_error(&e, Some(call));
    conn.client
        .batch_execute(&format!(
            "SAVEPOINT pgrollout_perf_set; {}",
            set_local_search_path_sql(&routine.search_path)
        ))
        .await
        .map_err(sql_error)?;
    let timed = async {
        let statement = conn.client.prepare(call).await.map_err(sql_error)?;
        let mut times = Vec::with_capacity(runs as usize);
        for run in 0..=runs {
            conn.client
                .batch_execute("SAVEPOINT pgrollout_perf")
                .await
                .map_err(sql_error)?;
            let started = Instant::now();
            let outcome = crate::sql::project_rows::count_rows(&conn.client, &statement).await;
            let elapsed = started.elapsed();
            conn.client
                .batch_execute(
                    "ROLLBACK TO SAVEPOINT pgrollout_perf; RELEASE SAVEPOINT pgrollout_perf",
                )
                .await
                .map_err(sql_error)?;
            outcome.map_err(sql_error)?;
            if run > 0 {
                times.push(elapsed);
            }
        }
        Ok(times)
    }
    .await;
    // Rolled back either way: that undoes the path too (a release would
    // keep it), and the runs left nothing behind to keep.
    let end = "ROLLBACK TO SAVEPOINT pgrollout_perf_set; RELEASE SAVEPOINT pgrollout_perf_set";
    conn.client.batch_execute(end).await.map_err(sql_error)?;
    timed
}

/// The median in microseconds (the mean of the middle two for an even count).
fn median_us(times: &mut [Duration]) -> u64 {
    if times.is_empty() {
        return 0;
    }
    times.sort_unstable();
    let middle = times.len() / 2;
    let median = if times.len() % 2 == 1 {
        times[middle]
    } else {
        (times[middle - 1] + times[middle]) / 2
    };
    u64::try_from(median.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_ignores_outliers() {
        let ms = Duration::from_millis;
        assert_eq!(median_us(&mut [ms(9), ms(1), ms(2)]), 2_000);
        assert_eq!(median_us(&mut [ms(4), ms(1), ms(2), ms(300)]), 3_000);
        assert_eq!(median_us(&mut []), 0);
    }
}
