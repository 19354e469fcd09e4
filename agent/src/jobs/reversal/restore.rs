//! The automatic rollback after a failed post-commit smoke test (SEED.md
//! "Automatic Rollback"): the deploy's own changes undone in one transaction
//! on the deploy's connection (which still holds the deploy lock), with the
//! same code as `pgrollout rollback` — definition, owner, ACL and comment
//! exactly as the verified backup recorded them; a routine the deploy created
//! is dropped; ledger rows (action `auto-rollback`) point at the deploy rows
//! they reverse.

use pgrollout_shared::operations::{RollbackScope, RollbackSpec, RollbackTarget};

use super::apply::{prepare_and_apply, Reversal};
use super::plan::{Goal, Planned};
use super::progress::Progress;
use super::versions::by_identity;
use crate::backup::WrittenBackup;
use crate::jobs::context::{JobContext, JobFailure};
use crate::jobs::steps::database;
use crate::sql::{self, TargetConnection};

/// The automatic rollback of a deploy whose transaction a smoke call
/// committed behind the agent's back (`escaped`): the same restore, from
/// the deploy's ledger rows and backup.
pub async fn restore_committed(
    ctx: &JobContext,
    conn: &mut TargetConnection,
) -> Result<usize, JobFailure> {
    ctx.step("auto-rollback", restore(ctx, conn), |count| {
        format!("{count} routine(s) restored exactly (definition, owner, ACL, comment)")
    })
    .await
}

pub async fn restore_backup(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    written: &WrittenBackup,
) -> Result<(), JobFailure> {
    ctx.step("auto-rollback", restore(ctx, conn), |count| {
        format!(
            "{count} routine(s) restored exactly (definition, owner, ACL, comment) from {}",
            written.path.display()
        )
    })
    .await
    .map(|_| ())
}

async fn restore(ctx: &JobContext, conn: &mut TargetConnection) -> Result<usize, JobFailure> {
    let schema = &ctx.target.ledger_schema;
    let deployed = sql::find_job_in_ledger(&conn.client, schema, &ctx.job.id)
        .await
        .map_err(|e| database("cannot read the deploy's ledger rows", e))?;
    let identities: Vec<String> = deployed
        .iter()
        .map(|(_, identity, _)| identity.clone())
        .collect();
    let rows = sql::rows_for_identities(&conn.client, schema, &identities)
        .await
        .map_err(|e| database("cannot read the ledger", e))?;
    let planned: Vec<Planned<'_>> = by_identity(&rows)
        .into_iter()
        .filter_map(|(identity, group)| {
            let own = group
                .iter()
                .copied()
                .rfind(|row| row.job_id == ctx.job.id && row.action == "deploy")?;
            Some(Planned {
                identity,
                goal: Goal::Undo(own),
                live: Some(own),
                rows: group,
            })
        })
        .collect();
    // Reverse deploy order: dependants before what they need.
    let mut planned = planned;
    planned.sort_by_key(|p| std::cmp::Reverse(p.ledger_row().id));
    if planned.is_empty() {
        return Err(JobFailure::deploy(
            "the deploy's ledger rows are missing, so there is nothing to restore from",
        ));
    }
    // The deploy's verified backup is the first source; the ledger rows the
    // deploy wrote in the same transaction are the fallback.
    let spec = RollbackSpec {
        scope: RollbackScope::Rollout(ctx.job.rollout_id.clone()),
        target: RollbackTarget::Previous,
        emergency: None,
        known_versions: Vec::new(),
    };
    let reversal = Reversal {
        action: "auto-rollback",
        job_id: format!("{}:auto-rollback", ctx.job.id),
        strict: false,
        smoke: false,
    };
    let mut warnings = Vec::new();
    let applied = prepare_and_apply(
        ctx,
        conn,
        &spec,
        &planned,
        &reversal,
        &Progress::default(),
        &mut warnings,
    )
    .await;
    match applied {
        Ok(applied) => {
            // The restore's transaction is sealed (it runs smoke tests).
            conn.set_sealed_xid(None);
            conn.client
                .batch_execute(crate::jobs::context::txn_seal::UNSEAL_AND_COMMIT)
                .await
                .map_err(|e| database("COMMIT of the automatic rollback failed", e))?;
            for warning in &warnings {
                tracing::warn!(job_id = %ctx.job.id, warning = %warning, "automatic rollback");
            }
            Ok(applied.restored.len())
        }
        Err(stopped) => {
            let _ = conn.client.batch_execute("ROLLBACK").await;
            Err(stopped.failure)
        }
    }
}
