//! The deploy's CREATEs, pipelined as always; a change PostgreSQL refuses to
//! `CREATE OR REPLACE` (another return type, OUT parameters, renamed
//! arguments, removed defaults: SQLSTATE 42P13) is made as DROP + CREATE in
//! the same transaction, carrying the old routine's owner, ACL and comment.
//! The CREATEs run in a savepoint: after such a refusal it is rolled back,
//! the routine dropped (refused, naming them, when anything depends on it)
//! and the CREATEs run again. Other routines are never dropped.

use pgrollout_shared::routine::Routine;

use super::apply::{self, CreateFailed};
use super::statement::{database, refused, simple};
use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::recreate::{drop_for_recreate, needs_drop_and_create, RecreateError};
use crate::sql::{exact_restore, RoutineSnapshot, TargetConnection};

/// Creates `routines` (each with its state before the deploy); returns the
/// positions of the ones that were dropped and created again. On failure:
/// the position that failed and why; the caller rolls back.
pub async fn create_changed(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    previous: &[&RoutineSnapshot],
) -> Result<Vec<usize>, (usize, JobFailure)> {
    let mut recreate: Vec<usize> = Vec::new();
    loop {
        let at = |failure: JobFailure| (recreate.first().copied().unwrap_or(0), failure);
        // The savepoint goes out in the CREATEs' pipeline, and its release
        // after them: two round trips fewer. After a DROP for a recreate it
        // is opened on its own, since the DROP must run inside it.
        let mut around = apply::Around {
            before: Some(OPEN_APPLY),
            after: Some(RELEASE_APPLY),
        };
        if !recreate.is_empty() {
            simple(conn, OPEN_APPLY).await.map_err(at)?;
            let identities: Vec<String> = recreate
                .iter()
                .filter_map(|&i| previous[i].identity.clone())
                .collect();
            drop_for_recreate(&conn.client, &identities)
                .await
                .map_err(|e| at(recreate_failure(e)))?;
            around.before = None;
        }
        match apply::create_routines(ctx, conn, routines, around, (0, routines.len())).await {
            Ok(()) => {
                carry_metadata(conn, &recreate, previous)
                    .await
                    .map_err(at)?;
                return Ok(recreate);
            }
            Err(CreateFailed::Routine(index, error))
                if needs_drop_and_create(&error)
                    && previous[index].existed
                    && !recreate.contains(&index) =>
            {
                // The release after the CREATEs failed in the aborted
                // transaction: the savepoint is still there to roll back to.
                simple(
                    conn,
                    "ROLLBACK TO SAVEPOINT pgrollout_apply; RELEASE SAVEPOINT pgrollout_apply",
                )
                .await
                .map_err(at)?;
                recreate.push(index);
            }
            Err(CreateFailed::Routine(index, error)) => {
                return Err((index, apply::create_failure(&routines[index], error)))
            }
            Err(CreateFailed::Around(statement, error)) => {
                return Err(at(database(format!("{statement} failed"), error)))
            }
        }
    }
}

const OPEN_APPLY: &str = "SAVEPOINT pgrollout_apply";
const RELEASE_APPLY: &str = "RELEASE SAVEPOINT pgrollout_apply";

fn recreate_failure(error: RecreateError) -> JobFailure {
    match error {
        // Refused: the transaction is rolled back, nothing changed.
        RecreateError::Dependants(found) => refused(found.to_string()),
        RecreateError::Database(e) => {
            JobFailure::database("dropping a routine to create it again failed", e)
        }
    }
}

/// Gives each recreated routine the owner, ACL and comment its predecessor
/// had; the plan's grants are applied on top afterwards, as for any routine.
async fn carry_metadata(
    conn: &TargetConnection,
    recreated: &[usize],
    previous: &[&RoutineSnapshot],
) -> Result<(), JobFailure> {
    if recreated.is_empty() {
        return Ok(());
    }
    let failed = |e: exact_restore::ExactRestoreError| {
        JobFailure::deploy(format!(
            "carrying owner, ACL and comment over to a recreated routine failed: {}",
            e.describe()
        ))
        .with_sql_state(e.sql_state())
    };
    let wanted: Vec<&RoutineSnapshot> = recreated.iter().map(|&i| previous[i]).collect();
    let acls = exact_restore::wanted_acls(conn, &wanted)
        .await
        .map_err(failed)?;
    let who = exact_restore::session(&conn.client)
        .await
        .map_err(|e| failed(e.into()))?;
    let targets: Vec<exact_restore::ExactTarget<'_>> = wanted
        .iter()
        .zip(&acls)
        .filter_map(|(wanted, acl)| {
            Some(exact_restore::ExactTarget {
                lookup: wanted.identity.as_deref()?,
                wanted,
                acl,
            })
        })
        .collect();
    // The definition differs on purpose; owner, ACL and comment are set.
    exact_restore::set_metadata(&conn.client, &who, &targets)
        .await
        .map_err(failed)?;
    Ok(())
}
