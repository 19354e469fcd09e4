//! `pgrollout audit verify`'s question to a zone (issue 13): which audit
//! anchors does the target's ledger hold? Read-only; the controller compares
//! them with its store.

use pgrollout_shared::proto::{JobResult, Outcome};

use super::steps::{self, database, Stopped};
use crate::jobs::context::{Finished, JobContext};
use crate::sql;

pub async fn run(ctx: &JobContext) -> Finished {
    read(ctx)
        .await
        .map_or_else(Stopped::into_result, Finished::from)
}

async fn read(ctx: &JobContext) -> Result<JobResult, Stopped> {
    let conn = steps::connect(ctx).await?;
    let anchors = sql::audit_anchors(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(|e| database("cannot read the ledger's audit anchors", e))?;
    Ok(JobResult {
        outcome: Outcome::Succeeded as i32,
        message: format!("{} audit anchor(s)", anchors.len()),
        audit_anchors: anchors,
        ..Default::default()
    })
}
