//! Giving pruned space back to the filesystem (issue 17). Retention deletes
//! step events and job results; SQLite keeps the freed pages in the file for
//! reuse, so without this the file never shrinks. A store is created with
//! `auto_vacuum = INCREMENTAL` (pages are tracked so that free ones can be
//! moved to the end and cut off), and after each retention run
//! `engine/retention.rs` calls [`Store::return_free_pages`], which runs
//! `PRAGMA incremental_vacuum` a bounded number of pages per call, so a
//! rollout waiting on the store waits for one short step, never for a whole
//! VACUUM. A store created before this has `auto_vacuum = NONE`, which only a
//! full VACUUM can change: [`convert`] does that once, at the first start
//! after the upgrade, and logs its cost.

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;

use super::db::{self, params};

use super::{Store, StoreError};

/// SQLite's `auto_vacuum` value for INCREMENTAL.
const INCREMENTAL: i64 = 2;

/// Pages moved and cut off per call: 1,000 pages of 4 KiB, a few
/// milliseconds of work.
pub const PAGES_PER_STEP: u32 = 1_000;

/// Before any table exists (a new store), or by one VACUUM (an older
/// store), makes the store's free pages returnable. A VACUUM that fails
/// (e.g. the disk cannot hold the temporary copy) leaves the store as it
/// was: the controller starts, and pruned pages are only reused.
pub(super) fn convert(connection: &Connection, path: &Path) -> rusqlite::Result<()> {
    let mode: i64 = connection.query_row("PRAGMA auto_vacuum", [], |row| row.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    connection.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    let tables: i64 =
        connection.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    if tables == 0 {
        // A new store: the setting takes effect as its first table is made.
        return Ok(());
    }
    let bytes = file_bytes(path);
    tracing::info!(
        store_mib = bytes / (1 << 20),
        "store: rewriting the store once (VACUUM) so that retention can return pruned space to the filesystem"
    );
    let started = Instant::now();
    // In WAL mode the rewritten store is first a WAL as large as the store:
    // checkpoint it into the main file and empty it.
    match connection.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);") {
        Ok(()) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            store_mib = file_bytes(path) / (1 << 20),
            "store: rewritten; pruned space is returned to the filesystem from now on"
        ),
        Err(error) => tracing::warn!(
            error = %error,
            "store: the one-time VACUUM failed (is there room for a copy of the store?); \
             the store works as before, and pruned space is reused but not returned until it succeeds at a later start"
        ),
    }
    Ok(())
}

/// The size of the store's main file (0 if unreadable: only for logs).
fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What one [`Store::return_free_pages`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreePages {
    /// Free pages returned by this step.
    pub returned: u64,
    /// Free pages still in the file.
    pub left: u64,
    /// Bytes per page.
    pub page_size: u64,
}

impl Store {
    /// Returns up to `pages` free pages to the filesystem (one
    /// `incremental_vacuum` step), and when none are left, checkpoints the
    /// write-ahead log so the main file is cut to its new length.
    pub async fn return_free_pages(&self, pages: u32) -> Result<FreePages, StoreError> {
        self.call_checkpointing(move |c| {
            if c.dialect() == db::Dialect::Postgres {
                // Autovacuum keeps a PostgreSQL store's space: no step here.
                return Ok(FreePages {
                    returned: 0,
                    left: 0,
                    page_size: 0,
                });
            }
            let before: i64 = c.query_row("PRAGMA freelist_count", params![], |row| row.get(0))?;
            if before > 0 {
                // A pragma that returns rows: step through them all.
                let mut statement = c.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
                let mut rows = statement.query(params![])?;
                while rows.next()?.is_some() {}
            }
            let left: i64 = c.query_row("PRAGMA freelist_count", params![], |row| row.get(0))?;
            if left == 0 && before > 0 {
                // The moved pages are in the WAL until a checkpoint writes
                // them and truncates the main file (and empties the WAL).
                truncating_checkpoint(c)?;
            }
            let page_size: i64 = c.query_row("PRAGMA page_size", params![], |row| row.get(0))?;
            Ok(FreePages {
                returned: (before - left).max(0) as u64,
                left: left.max(0) as u64,
                page_size: page_size.max(0) as u64,
            })
        })
        .await
    }
}

/// `wal_checkpoint(TRUNCATE)`: every WAL frame into the main file, the
/// file cut to the store's length, the WAL emptied. Run by
/// [`Store::call_checkpointing`], so no other checkpoint holds the lock; a
/// reader still in an older snapshot (none on the store's one connection)
/// would leave it "busy", which is only logged: the file is then cut at a
/// later checkpoint.
pub(super) fn truncating_checkpoint(c: &mut db::Conn) -> db::Result<()> {
    let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", params![], |row| {
        row.get(0)
    })?;
    if busy != 0 {
        tracing::warn!(
            "the store's write-ahead log was busy: its file is cut at a later checkpoint"
        );
    }
    Ok(())
}
