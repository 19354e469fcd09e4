//! What an environment runs after a successful deploy, on a fresh
//! connection, each in transactions that are rolled back: the plan's pgTAP
//! files (`run_pgtap`) and its performance probes (`run_perf_probe`). Their
//! reports travel in the deploy's result, where the next environment's
//! `tests_passed` and `performance` gates read them. They never change the
//! deploy's outcome: what they find is for the next gate to judge.

use pgrollout_shared::job::BatchOptions;
use pgrollout_shared::proto::{JobResult, Outcome, StepStatus};
use pgrollout_shared::routine::Routine;
use pgrollout_shared::test_reports::{perf_percent, perf_refusal, pgtap_summary};

use crate::jobs::context::{JobContext, JobFailure};
use crate::jobs::steps::{perf, pgtap, take_deploy_lock};
use crate::sql;
use pgrollout_shared::errors::error_chain;

pub async fn run(
    ctx: &JobContext,
    routines: &[Routine],
    batch: &BatchOptions,
    result: &mut JobResult,
) {
    if result.outcome() != Outcome::Succeeded || result.replayed_from_ledger {
        return;
    }
    let pgtap_wanted = batch.run_pgtap && routines.iter().any(|r| r.pgtap.is_some());
    let perf_wanted = batch.run_perf_probe && routines.iter().any(|r| r.perf_probe.is_some());
    if !pgtap_wanted && !perf_wanted {
        return;
    }
    let conn = match sql::connect(&ctx.target, &ctx.config.timeouts).await {
        Ok(conn) => conn,
        Err(error) => {
            let step = if pgtap_wanted { "pgtap" } else { "perf-probe" };
            let message = format!("not run: {}", error_chain(&error));
            let code = error.sql_state();
            ctx.event_coded(step, StepStatus::Failed, &message, 0, Vec::new(), code);
            result.warnings.push(format!("{step} {message}"));
            return;
        }
    };
    if pgtap_wanted {
        match pgtap_step(ctx, &conn, routines).await {
            Ok(reports) => {
                for report in reports.iter().filter(|r| !r.passed) {
                    result.warnings.push(format!(
                        "pgTAP {}: {} — the tests_passed gate of the environments promoted from here will refuse this plan",
                        report.path,
                        pgtap_summary(report)
                    ));
                }
                result.pgtap = reports;
            }
            Err(failure) => result
                .warnings
                .push(format!("pgTAP not run: {}", failure.message())),
        }
    }
    if perf_wanted {
        let measured = async {
            take_deploy_lock(ctx, &conn).await?;
            perf::probe_step(ctx, &conn, routines, &batch.perf_targets).await
        }
        .await;
        match measured {
            Ok(reports) => {
                // A failed probe, or one over the target's limit, is said
                // now: the target's gate will refuse this plan (issue 23).
                for report in &reports {
                    if let Some(refusal) = perf_refusal(report) {
                        let what = if report.error.is_empty() {
                            format!("new median {}% of the old one", perf_percent(report))
                        } else {
                            report.error.clone()
                        };
                        result.warnings.push(format!(
                            "performance probe of {}: {what} — {refusal}",
                            report.routine
                        ));
                    }
                }
                result.perf = reports;
            }
            Err(failure) => result
                .warnings
                .push(format!("performance probe not run: {}", failure.message())),
        }
    }
}

/// The pgTAP files as one `pgtap` step: skipped when pgTAP is missing,
/// failed when a test failed.
async fn pgtap_step(
    ctx: &JobContext,
    conn: &sql::TargetConnection,
    routines: &[Routine],
) -> Result<Vec<pgrollout_shared::proto::PgtapReport>, JobFailure> {
    ctx.event("pgtap", StepStatus::Started, "", 0, Vec::new());
    let started = std::time::Instant::now();
    let reports = pgtap::run_scripts(ctx, conn, routines).await;
    let elapsed = crate::jobs::context::millis(started.elapsed());
    match &reports {
        Ok(reports) => {
            let status = if reports.iter().all(|r| r.passed) {
                StepStatus::Succeeded
            } else if reports.iter().all(|r| !r.skipped.is_empty()) {
                StepStatus::Skipped
            } else {
                StepStatus::Failed
            };
            let message = reports
                .iter()
                .map(|r| format!("{}: {}", r.path, pgtap_summary(r)))
                .collect::<Vec<_>>()
                .join(" | ");
            ctx.event("pgtap", status, message, elapsed, Vec::new());
        }
        Err(failure) => ctx.failed("pgtap", failure, elapsed),
    }
    reports
}
