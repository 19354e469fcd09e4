//! Runs the smoke tests of a set of routines: existence and expected types
//! in one round trip, then the calls — pipelined (`pipeline.rs`), or one by
//! one (`checks.rs`) when a notice must be matched to its call.

use std::time::{Duration, Instant};

use pgrollout_shared::proto::SmokeReport;
use pgrollout_shared::routine::{Routine, SmokeTest};

use super::checks::{check_exists, resolve_expected_types, run_one};
use crate::jobs::context::millis;
use crate::sql::TargetConnection;

/// Smoke-tests every routine; a routine without tests still gets its
/// existence checked. Errors of the test calls are reports, not `Err`: only a
/// failure of the connection itself is returned as an error.
///
/// The calls are pipelined (`pipeline.rs`); when one of them raised a
/// notice, they run again one by one so that each notice is reported with the
/// call that raised it.
pub async fn run_smoke_tests(
    conn: &mut TargetConnection,
    routines: &[Routine],
    phase: &str,
) -> Result<Vec<SmokeReport>, tokio_postgres::Error> {
    run_smoke_tests_at(conn, routines, &[], phase, Counted::AsUsual, |_, _| {}).await
}

/// Whether the smoke calls count in `pg_stat_user_functions`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// As the session's settings say.
    AsUsual,
    /// Kept out (`sql::watch_stats::stop_counting_calls`): a deploy's own
    /// calls must not move the statistics a post-deploy watch compares.
    Not,
}

/// [`run_smoke_tests`] of routines whose oids are known (all of them, or
/// `oids` is empty): their existence is checked by oid, without resolving
/// the signatures again.
pub async fn run_smoke_tests_at(
    conn: &mut TargetConnection,
    routines: &[Routine],
    oids: &[u32],
    phase: &str,
    counted: Counted,
    mut progress: impl FnMut(usize, usize) + Send,
) -> Result<Vec<SmokeReport>, tokio_postgres::Error> {
    // Both catalog queries and the statistics setting go out together: one
    // round trip. The setting follows the reads (its savepoint, should the
    // setting be refused, is rolled back after their answers), and the
    // calls come after all three.
    let uncounted = async {
        match counted {
            Counted::Not => crate::sql::watch_stats::stop_counting_calls(&conn.client)
                .await
                .map(|_| ()),
            Counted::AsUsual => Ok(()),
        }
    };
    let (existence, types, uncounted) = futures_util::future::join3(
        check_exists(conn, routines, oids),
        resolve_expected_types(conn, routines),
        uncounted,
    )
    .await;
    let (existence, types) = (existence?, types?);
    uncounted?;
    let mut runnable: Vec<&SmokeTest> = Vec::new();
    for (routine, exists) in routines.iter().zip(&existence) {
        if exists.passed {
            runnable.extend(&routine.smoke_tests);
        }
    }
    let total = runnable.len();
    let pipelined = super::pipeline::run_calls(conn, &runnable, &types, &mut progress).await?;
    let mut calls = match pipelined {
        Some(checks) => checks,
        None => {
            let mut checks = Vec::with_capacity(runnable.len());
            for test in &runnable {
                let started = Instant::now();
                let these = run_one(conn, test, &types).await?;
                checks.push((these, started.elapsed()));
                progress(checks.len(), total);
            }
            checks
        }
    }
    .into_iter();
    let mut reports = Vec::new();
    for (routine, exists) in routines.iter().zip(existence) {
        if routine.smoke_tests.is_empty() {
            reports.push(SmokeReport {
                routine: routine.identity.to_string(),
                test: pgrollout_shared::smoke_compact::EXISTENCE_ONLY_TEST.into(),
                phase: phase.into(),
                passed: exists.passed,
                checks: vec![exists],
                duration_ms: 0,
            });
            continue;
        }
        for test in &routine.smoke_tests {
            let mut checks = vec![exists.clone()];
            let mut elapsed = Duration::ZERO;
            if exists.passed {
                // One answer per runnable test, in the same order.
                let (these, took) = calls.next().unwrap_or_default();
                checks.extend(these);
                elapsed = took;
            }
            reports.push(SmokeReport {
                routine: routine.identity.to_string(),
                test: test.name.clone(),
                phase: phase.into(),
                passed: checks.iter().all(|c| c.passed),
                duration_ms: millis(elapsed),
                checks,
            });
        }
    }
    Ok(reports)
}
