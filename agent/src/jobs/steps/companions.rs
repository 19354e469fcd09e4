//! Companion statements (issue 15): the GRANT/REVOKE, COMMENT ON and
//! ALTER … OWNER TO statements a procedure file keeps next to its routines
//! (`REVOKE ALL ON FUNCTION app.f(regclass) FROM PUBLIC` for a SECURITY
//! DEFINER function). The controller accepted each one only because every
//! routine it names is created by the same file.
//!
//! They run in the deploy's transaction right after the CREATEs and the
//! sidecar grants, in file order, each with the search path its routine's
//! CREATE ran with (an unqualified name in them resolves as it did there).
//! A failure fails the deploy like a failed CREATE: the transaction is
//! rolled back and nothing changed. A rollback restores owner, ACL and
//! comment from the snapshot taken before, as for any change.

use pgrollout_shared::routine::{set_local_search_path_sql, Routine, CODE_DEFAULT_SEARCH_PATH};

use crate::jobs::context::JobFailure;
use crate::sql::{TargetConnection, RESET_TO_AGENT_SEARCH_PATH};

/// Runs every routine's companion statements; returns how many ran. Each
/// goes through the extended protocol, which accepts exactly one statement
/// (nothing can be smuggled after a `;`). A statement shared by several
/// routines of the plan (`GRANT … ON FUNCTION a(int), b(int)`) runs once.
pub async fn apply(conn: &TargetConnection, routines: &[Routine]) -> Result<usize, JobFailure> {
    // A statement naming several routines of a file comes with each: run once.
    let mut ran: std::collections::HashSet<(&[String], &str)> = Default::default();
    for routine in routines {
        for statement in &routine.companion_sql {
            if ran.insert((routine.search_path.as_slice(), statement.as_str())) {
                run_one(conn, routine, statement).await?;
            }
        }
    }
    Ok(ran.len())
}

async fn run_one(
    conn: &TargetConnection,
    routine: &Routine,
    statement: &str,
) -> Result<(), JobFailure> {
    let failure = |error| {
        JobFailure::in_statement(
            format!(
                "a statement next to {} in {} failed",
                routine.identity, routine.source_path
            ),
            error,
            statement,
        )
    };
    let set = set_local_search_path_sql(&companion_search_path(&routine.search_path));
    conn.client.batch_execute(&set).await.map_err(failure)?;
    conn.client
        .execute_typed(statement, &[])
        .await
        .map_err(failure)?;
    // Back to the agent's own path, as after the CREATEs.
    conn.client
        .batch_execute(RESET_TO_AGENT_SEARCH_PATH)
        .await
        .map_err(failure)
}

/// The routine's path with `pg_catalog` after it (unless it names it
/// already). PostgreSQL searches a path that leaves `pg_catalog` out
/// *before* it: next to the file's own `public.pg_read_file(text)`,
/// `GRANT EXECUTE ON FUNCTION pg_read_file(text) TO app` would grant the
/// built-in, which only a superuser may call. A companion statement acts on
/// its file's routines, and this makes an unqualified name find them first.
fn companion_search_path(search_path: &[String]) -> Vec<String> {
    let mut path = if search_path.is_empty() {
        vec![CODE_DEFAULT_SEARCH_PATH.to_owned()]
    } else {
        search_path.to_vec()
    };
    if !path.iter().any(|schema| schema == "pg_catalog") {
        path.push("pg_catalog".to_owned());
    }
    path
}
