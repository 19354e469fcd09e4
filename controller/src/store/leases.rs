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

use super::db::{self, params, Conn, Dialect, OptionalExtension, Value};
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

/// A fenced write the store refused: the lease it was made under has
/// another holder or token now. Never transient: the token of a lease only
/// grows, so the same write under the same fence is refused forever; the
/// singleton stops on this controller (`engine/leader.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {singleton} lease moved on: fencing token {token} of {holder} no longer holds it, \
     so the store refused the write"
)]
pub struct FenceLost {
    pub singleton: String,
    pub holder: String,
    pub token: i64,
}

impl FenceLost {
    pub fn of(fence: &Fence) -> FenceLost {
        FenceLost {
            singleton: fence.name.clone(),
            holder: fence.holder.clone(),
            token: fence.token,
        }
    }
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

/// The first statement of a transaction whose writes a singleton makes
/// (retention's page, a drift scan's record): proves that `fence` still
/// holds and, on PostgreSQL, locks the lease row (`FOR SHARE`) until the
/// transaction ends, so a takeover waits for these writes to commit and no
/// write of the transaction lands after it — the guarantee of `fenced`'s
/// check in a statement's own `WHERE`, for several statements. On SQLite
/// the transaction is begun `IMMEDIATE` by the caller, so nothing writes
/// between this check and the commit.
pub(super) fn hold_fence(c: &Conn, fence: &Fence) -> db::Result<Result<(), FenceLost>> {
    let (clause, values) = fence_clause(fence, 1, c.dialect());
    let held: bool = c.query_row(&format!("SELECT {clause}"), &values, |row| row.get(0))?;
    Ok(if held {
        Ok(())
    } else {
        Err(FenceLost::of(fence))
    })
}

/// After a fenced write changed no row: whether the fence was the reason
/// (the lease moved on) or the row itself (cancelled, gone). Sound after
/// the fact: once a fence no longer holds it never holds again.
pub(super) fn refused_for_fence(c: &Conn, fence: Option<&Fence>) -> db::Result<Option<FenceLost>> {
    let Some(fence) = fence else {
        return Ok(None);
    };
    Ok(hold_fence(c, fence)?.err())
}
