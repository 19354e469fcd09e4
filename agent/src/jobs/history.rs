//! `pgrollout history`: every version the target's ledger knows of a
//! procedure's routines, oldest first, and which one the catalog holds now.
//! Read-only: the controller cannot reach the database, so the agent reads.

use pgrollout_shared::operations::RoutineSelector;
use pgrollout_shared::proto::{JobResult, LedgerEntry, Outcome};

use super::reversal::versions::by_identity;
use super::steps::{self, database, refused, Stopped};
use crate::jobs::context::{Finished, JobContext};
use crate::sql::{self, LedgerRecord};

pub async fn run(ctx: &JobContext, selector: &RoutineSelector) -> Finished {
    history(ctx, selector)
        .await
        .map_or_else(Stopped::into_result, Finished::from)
}

async fn history(ctx: &JobContext, selector: &RoutineSelector) -> Result<JobResult, Stopped> {
    let conn = steps::connect(ctx).await?;
    let rows = ctx
        .step(
            "ledger",
            async {
                sql::rows_for_selector(&conn.client, &ctx.target.ledger_schema, selector)
                    .await
                    .map_err(|e| database("cannot read the ledger", e))
            },
            |rows| format!("{} ledger row(s)", rows.len()),
        )
        .await?;
    if rows.is_empty() {
        return Err(refused(format!(
            "the ledger of target {} has no rows for {}: pgrollout never changed it there",
            ctx.target.name, ctx.job.label
        ))
        .into());
    }
    // Where each routine's latest row says it is: renamed by a disable, or
    // under its own name.
    let groups = by_identity(&rows);
    let lasts: Vec<&LedgerRecord> = groups
        .iter()
        .filter_map(|(_, group)| group.last().copied())
        .collect();
    let lookups: Vec<String> = lasts
        .iter()
        .map(|row| {
            row.new_identity
                .clone()
                .unwrap_or_else(|| row.identity.clone())
        })
        .collect();
    let live = sql::snapshot_routines(&conn.client, &lookups)
        .await
        .map_err(|e| database("cannot read the catalog", e))?;
    let mut warnings = Vec::new();
    let mut live_ids = Vec::new();
    for (row, live) in lasts.iter().zip(&live) {
        if live.definition_sha256() == row.new_sha256 {
            live_ids.push(row.id);
        } else {
            warnings.push(format!(
                "{}: the catalog differs from the ledger's latest row (#{}): changed outside pgrollout",
                row.identity, row.id
            ));
        }
    }
    let history: Vec<LedgerEntry> = rows
        .iter()
        .map(|row| LedgerEntry {
            id: row.id,
            applied_at_unix_ms: row.applied_at_ms,
            identity: row.identity.clone(),
            action: row.action.clone(),
            change: row.change.clone(),
            actor: row.actor.clone(),
            plan_id: row.plan_id.clone(),
            commit_sha: row.commit_sha.clone().unwrap_or_default(),
            trace_id: row.trace_id.clone().unwrap_or_default(),
            rollout_id: row.rollout_id.clone(),
            job_id: row.job_id.clone(),
            previous_sha256: row.previous_sha256.clone().unwrap_or_default(),
            new_sha256: row.new_sha256.clone().unwrap_or_default(),
            undoes_ledger_id: row.undoes_ledger_id.unwrap_or_default(),
            note: row.note.clone().unwrap_or_default(),
            live: live_ids.contains(&row.id),
        })
        .collect();
    Ok(JobResult {
        outcome: Outcome::Succeeded as i32,
        message: format!(
            "{} ledger row(s) for {} routine(s)",
            history.len(),
            groups.len()
        ),
        history,
        warnings,
        ..Default::default()
    })
}
