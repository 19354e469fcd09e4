//! `pgrollout drift` (issue 20): the target's live catalog against what its
//! ledger last recorded of every routine. Read-only: no advisory lock (a
//! deploy may run meanwhile; the scan reads one snapshot), no transaction of
//! its own to seal, no ledger row. One catalog query (`sql/drift_scan.sql`);
//! the judging is `steps/drift/compare.rs` (shared with the deploy's
//! `no_drift` check), the diffs `steps/drift/diff.rs`.

use std::time::Instant;

use pgrollout_shared::proto::{DriftReport, JobResult, Outcome};

use super::steps::{self, database, drift as compare, Stopped};
use crate::jobs::context::{Finished, JobContext};
use crate::sql;

pub async fn run(ctx: &JobContext, names: &[String]) -> Finished {
    scan(ctx, names)
        .await
        .map_or_else(Stopped::into_result, Finished::from)
}

async fn scan(ctx: &JobContext, names: &[String]) -> Result<JobResult, Stopped> {
    let conn = steps::connect(ctx).await?;
    let started = Instant::now();
    let scan = sql::drift_scan(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(|e| database("cannot read the ledger and the catalog for drift", e))?;
    let scan_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (findings, checked) = compare::findings(&scan.routines, names);
    let message = match findings.len() {
        0 => format!("no drift in {checked} routine(s)"),
        n => format!("{n} routine(s) drifted from the ledger ({checked} checked)"),
    };
    Ok(JobResult {
        outcome: Outcome::Succeeded as i32,
        message,
        drift: Some(DriftReport {
            findings,
            routines_checked: checked,
            scan_ms,
            managed_schemas: scan.managed_schemas,
        }),
        ..Default::default()
    })
}
