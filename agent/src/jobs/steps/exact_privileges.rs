//! What an exact restore must know before its transaction begins: the
//! privileges each wanted state grants (a role that no longer exists is
//! reported before anything changes) and who this session is (it decides
//! which grantor a plain GRANT records). Rollback and enable both restore
//! ACLs exactly, so both read them here.

use super::statement::database;
use crate::jobs::context::JobFailure;
use crate::sql::exact_restore::{self, AclItem, Session};
use crate::sql::{RoutineSnapshot, TargetConnection};

/// The wanted ACL items of each of `wanted`, in order, and the session.
pub async fn privileges_ahead(
    conn: &TargetConnection,
    wanted: &[&RoutineSnapshot],
) -> Result<(Vec<Vec<AclItem>>, Session), JobFailure> {
    let acls = exact_restore::wanted_acls(conn, wanted)
        .await
        .map_err(|e| {
            JobFailure::deploy(format!(
                "cannot restore the previous privileges, nothing was changed: {}",
                e.describe()
            ))
            .with_sql_state(e.sql_state())
        })?;
    let who = exact_restore::session(&conn.client)
        .await
        .map_err(|e| database("cannot read the session's role", e))?;
    Ok((acls, who))
}
