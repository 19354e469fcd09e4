//! Sealed transactions (issue 13): every transaction in which the agent runs
//! SQL that is not a routine definition — smoke test calls, `[perf]` probe
//! calls, watch probes, pgTAP statements — is sealed so that nothing in it
//! can commit before the agent means to.
//!
//! The controller refuses transaction control in that SQL with PostgreSQL's
//! parser; the agent has no parser and does not trust the wire, so:
//!
//! - **The seal**: right after `BEGIN` the agent creates a temporary table
//!   holding two rows that violate a *deferred* unique constraint. A
//!   `COMMIT` (or `COMMIT AND CHAIN`, `END`, `PREPARE TRANSACTION`) sent by
//!   anyone else
//!   fails at commit time and rolls the whole transaction back; only the
//!   agent's own COMMIT deletes the rows first ([`UNSEAL_AND_COMMIT`]). Each
//!   call runs in a savepoint that is rolled back, so no call can delete the
//!   rows either, and a call's `SET CONSTRAINTS ALL IMMEDIATE` only fails
//!   that call. The table is `ON COMMIT DROP` and vanishes with the
//!   transaction however it ends. (A deferred unique constraint rather than
//!   the self-referencing foreign key used before: the same guarantee for a
//!   third of the catalog work — no primary key, no four RI triggers —
//!   measured 3.0 against 0.95 ms per sealed transaction with `pgbench`, on
//!   the deploy's critical path.)
//! - **The check**: [`confirm`] reads the transaction id next to the seal's
//!   rows; it fails when the transaction the agent opened is gone (the table
//!   went with it) or is another one. A job confirms after the calls and
//!   before it reports that the database is as it was.
//! - **No autocommit behind an escape**: each pipelined smoke call goes out
//!   in one message with its savepoint (`smoke/pipeline.rs`). A message of
//!   several statements runs as an implicit transaction block when no
//!   transaction is open, and `SAVEPOINT` is an error there: once a call has
//!   ended the agent's transaction, the calls already pipelined behind it
//!   never run, and the agent stops at the first rollback to the call's
//!   savepoint that fails.
//!
//! A connection opened ahead for a later sealed transaction (the post-commit
//! check's) makes the seal's table first, outside any transaction and off the
//! deploy's path ([`prepare_table`]): the table then lives for the session,
//! and a sealed `BEGIN` only inserts the rows. The rows belong to the
//! transaction, so a `COMMIT` from anyone else still fails on them, and once
//! that transaction is gone the rows are gone and [`confirm`] finds no seal.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::jobs::context::JobFailure;
use crate::sql::{describe_error, TargetConnection};

/// Opens the agent's transaction and seals it, and reads its id: one round
/// trip. `pg_temp` is named explicitly so no search path can redirect it.
const BEGIN_SEALED: &str = "BEGIN; \
    CREATE TEMP TABLE pgrollout_seal (id int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP; \
    INSERT INTO pg_temp.pgrollout_seal VALUES (1), (1); \
    SELECT pg_current_xact_id()::text";

/// The seal's table for the whole session, made outside any transaction.
const SEAL_TABLE_FOR_SESSION: &str =
    "CREATE TEMP TABLE pgrollout_seal (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)";

/// [`BEGIN_SEALED`] on a session whose table exists: the rows, and the id.
const BEGIN_SEALED_ON_TABLE: &str = "BEGIN; \
    INSERT INTO pg_temp.pgrollout_seal VALUES (1), (1); \
    SELECT pg_current_xact_id()::text";

/// One row, the transaction's id, while both of the seal's rows are there.
const SEALED_XID: &str = "SELECT pg_current_xact_id()::text FROM pg_temp.pgrollout_seal \
    WHERE id = 1 HAVING pg_catalog.count(*) = 2";

/// The agent's own COMMIT of a sealed transaction. Should the transaction
/// be gone, the DELETE fails and the COMMIT is never run.
pub const UNSEAL_AND_COMMIT: &str = "DELETE FROM pg_temp.pgrollout_seal; COMMIT";

/// Rolls a smoke call's savepoint back.
pub const CLOSE_SAVEPOINT: &str =
    "ROLLBACK TO SAVEPOINT pgrollout_smoke; RELEASE SAVEPOINT pgrollout_smoke";

/// `BEGIN`, sealed; the connection remembers the transaction's id.
pub async fn begin(conn: &TargetConnection) -> Result<(), JobFailure> {
    begin_client(conn)
        .await
        .map_err(|e| JobFailure::database("BEGIN (sealed) failed", e))
}

/// Makes the seal's table for the rest of `conn`'s session, outside any
/// transaction: every later [`begin`] on it only inserts its row.
pub async fn prepare_table(conn: &TargetConnection) -> Result<(), tokio_postgres::Error> {
    conn.client.batch_execute(SEAL_TABLE_FOR_SESSION).await?;
    conn.set_seal_table();
    Ok(())
}

/// [`begin`] with the driver's error.
pub async fn begin_client(conn: &TargetConnection) -> Result<(), tokio_postgres::Error> {
    let begin = if conn.has_seal_table() {
        BEGIN_SEALED_ON_TABLE
    } else {
        BEGIN_SEALED
    };
    let messages = conn.client.simple_query(begin).await?;
    let xid = messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    conn.set_sealed_xid(xid);
    Ok(())
}

/// Confirms that `conn` is still in the sealed transaction it opened, with
/// its seal in place. `Err` says what was found instead.
pub async fn confirm(conn: &TargetConnection) -> Result<(), String> {
    let Some(expected) = conn.sealed_xid() else {
        return Err("the agent's transaction was never sealed".into());
    };
    confirm_on(&conn.client, &expected).await
}

/// [`confirm`] after project SQL ran on `conn` (a broken connection is not
/// an escape: the server rolls back by itself); an escape is recorded on the
/// connection, for the job's failure path to read.
pub async fn confirm_after_calls(conn: &TargetConnection) -> Result<(), String> {
    if conn.client.is_closed() {
        return Ok(());
    }
    confirm(conn)
        .await
        .inspect_err(|why| conn.set_escaped(why.clone()))
}

async fn confirm_on(client: &Client, expected: &str) -> Result<(), String> {
    let found = client.simple_query(SEALED_XID).await;
    let rows: Vec<String> = match found {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .collect(),
        Err(error) => {
            return Err(format!(
                "the agent's transaction {expected} is no longer open ({})",
                describe_error(&error, None)
            ))
        }
    };
    match rows.as_slice() {
        [xid] if xid == expected => Ok(()),
        [xid] => Err(format!(
            "the session is in transaction {xid}, not in the agent's transaction {expected}"
        )),
        _ => Err(format!(
            "the seal of the agent's transaction {expected} was removed"
        )),
    }
}

/// What an operator reads when SQL of the project ended the agent's
/// transaction: what ran, and what that means.
pub fn escaped_message(what: &str, why: &str) -> String {
    format!(
        "{what} ended or left the agent's transaction ({why}); the agent stopped at once. \
         The transaction was sealed, so a COMMIT from that SQL failed and rolled it back; \
         calls sent after it ran in an aborted transaction"
    )
}
