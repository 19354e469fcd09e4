//! Leases for singleton work (issue 18, item 2; migration 0020): the work
//! that must run on exactly one controller at a time — the scheduler that
//! fires windows, the watches' sampling, the drift schedule, retention — is
//! done only by the holder of its lease row, taken and renewed by
//! compare-and-set (`engine/leader.rs`).
//!
//! Each change of holder increments the lease's **fencing token**. A write
//! made by singleton work carries its holder's [`Fence`] and checks it in
//! the same statement (`fence_clause`): an ex-leader that was paused or cut
//! off from the store past its lease, and does not know it lost, cannot
//! write once another controller took the lease — its token no longer
//! matches. On PostgreSQL the check locks the lease row (`FOR SHARE`), so a
//! takeover waits for a write in flight under the old token to commit, and
//! a write after it sees the new token. On SQLite (one controller) the
//! lease is held trivially, through the same statements.

use super::db::{params, Conn, Dialect, OptionalExtension, Value};
use super::{Store, StoreError};

/// The singletons, each with a lease of its own.
pub mod singleton {
    pub const SCHEDULER: &str = "scheduler";
    pub const WATCHES: &str = "watches";
    pub const DRIFT: &str = "drift";
    pub const RETENTION: &str = "retention";
    pub const ALL: [&str; 4] = [SCHEDULER, WATCHES, DRIFT, RETENTION];
}

/// What a lease holder proves with each write: the lease, the holder (a
/// controller's id and epoch) and the token it took the lease with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    pub token: i64,
}

/// A lease as stored (read by the tests).
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub epoch: i64,
    pub token: i64,
    pub expires_at: i64,
}

impl Store {
    /// Takes lease `name` for controller `holder` (this `epoch`) until
    /// `expires_at`, or renews it: granted when nobody holds it, when its
    /// holder is this controller (or its previous life: a smaller epoch),
    /// or when it expired before `now`. The token is kept on a renewal and
    /// incremented on every change of holder. `None`: another controller
    /// holds it. `sole`: this controller owns the store (SQLite), so any
    /// other holder is a dead process's, and the lease is taken at once.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        epoch: i64,
        now: i64,
        expires_at: i64,
        sole: bool,
    ) -> Result<Option<Fence>, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.call(move |c| {
            let token: Option<i64> = c
                .query_row(
                    "INSERT INTO leases (name, holder, epoch, token, expires_at)
                     VALUES (?1, ?2, ?3, 1, ?5)
                     ON CONFLICT (name) DO UPDATE SET
                        token = CASE WHEN leases.holder = excluded.holder AND leases.epoch = excluded.epoch
                                     THEN leases.token ELSE leases.token + 1 END,
                        holder = excluded.holder, epoch = excluded.epoch,
                        expires_at = excluded.expires_at
                     WHERE (leases.holder = excluded.holder AND leases.epoch <= excluded.epoch)
                        OR leases.expires_at < ?4 OR ?6 = 1
                     RETURNING token",
                    params![name, holder, epoch, now, expires_at, sole],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(token.map(|token| Fence {
                name,
                holder,
                epoch,
                token,
            }))
        })
        .await
    }

    /// Gives a lease up at once (a controller stopping), so another takes
    /// it without waiting for it to expire; only with its own token.
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.call(move |c| {
            c.execute(
                "UPDATE leases SET expires_at = 0
                 WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND token = ?4",
                params![fence.name, fence.holder, fence.epoch, fence.token],
            )
            .map(|_| ())
        })
        .await
    }

    /// Lease `name` as stored, if anyone ever took it.
    #[cfg(test)]
    pub async fn lease(&self, name: &str) -> Result<Option<LeaseRow>, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT holder, epoch, token, expires_at FROM leases WHERE name = ?1",
                params![name],
                |row| {
                    Ok(LeaseRow {
                        holder: row.get(0)?,
                        epoch: row.get(1)?,
                        token: row.get(2)?,
                        expires_at: row.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

/// The condition a fenced write adds to its `WHERE`: the lease still has
/// the fence's holder and token. Its four parameters are numbered from
/// `first`; on PostgreSQL it locks the lease row until the write commits.
fn fence_clause(fence: &Fence, first: usize, dialect: Dialect) -> (String, Vec<Value>) {
    let lock = if dialect == Dialect::Postgres {
        " FOR SHARE"
    } else {
        ""
    };
    let sql = format!(
        "EXISTS (SELECT 1 FROM leases WHERE name = ?{} AND holder = ?{} AND epoch = ?{} AND token = ?{}{lock})",
        first,
        first + 1,
        first + 2,
        first + 3
    );
    let values = vec![
        Value::Text(fence.name.clone()),
        Value::Text(fence.holder.clone()),
        Value::Int(fence.epoch),
        Value::Int(fence.token),
    ];
    (sql, values)
}

/// `sql` (an `UPDATE … WHERE …`) with `fence`'s condition added to its
/// `WHERE`, and its parameters after `values`; unchanged without a fence.
pub(super) fn fenced(
    c: &Conn,
    sql: String,
    mut values: Vec<Value>,
    fence: Option<&Fence>,
) -> (String, Vec<Value>) {
    let Some(fence) = fence else {
        return (sql, values);
    };
    let (clause, more) = fence_clause(fence, values.len() + 1, c.dialect());
    values.extend(more);
    (format!("{sql} AND {clause}"), values)
}
