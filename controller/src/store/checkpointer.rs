//! Moves SQLite's write-ahead-log checkpoints off the store's one
//! connection (issue 15, item 9).
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past
//! 1,000 pages: that commit writes about 4 MiB back into the main file and
//! fsyncs it while it holds the store's only connection. A thousand-routine
//! deploy writes its offer, plan and result (about 2 MiB of WAL), so every
//! other deploy's start or result waited for a checkpoint — several
//! milliseconds on the path from the agent's result to the operator's exit.
//!
//! Here a thread with a connection of its own runs
//! `wal_checkpoint(PASSIVE)` once the store has been quiet for a moment
//! after a write. Checkpointing on a clock instead (every 200 ms the WAL had
//! changed) put a 2–4 MiB copy and an fsync of the main file in the middle
//! of most deploys, where they took a core and the disk from the agent and
//! the database on a shared host (an agent journal fsync of 0.5 ms took
//! 9 ms beside one). A passive checkpoint waits for no reader or writer, so
//! the store's connection is never blocked by it, and SQLite restarts the
//! WAL from its beginning once a checkpoint has copied every frame.
//!
//! The store's own connection keeps SQLite's automatic checkpoint as a
//! backstop, at 4,096 pages (16 MiB) instead of 1,000: a store written
//! without a pause (a fleet rollout, many operators) never gives the thread
//! its quiet spell, and a passive checkpoint from another connection never
//! catches up with a writer that does not stop, so the WAL grew without
//! bound (350 MB in the test below). The writer's own checkpoint, between
//! its commits, always completes. `journal_size_limit` cuts the file back
//! to 4 MiB when SQLite starts the WAL again. If the thread cannot open its
//! connection, the main connection keeps SQLite's default checkpoints.
//!
//! A checkpoint the store runs itself (compaction's `TRUNCATE`, which cuts
//! the main file) pauses the thread first ([`Checkpointer::pause`]): while
//! one connection checkpoints, SQLite answers another's checkpoint "busy" at
//! once, without waiting and without cutting anything.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How often the thread looks at the WAL (a `stat`).
const LOOK_EVERY: Duration = Duration::from_millis(25);

/// How long the WAL must stay unchanged before a checkpoint: longer than
/// the gaps between a rollout's writes (its plan, its job's events, its
/// result, tens of milliseconds apart), so a checkpoint runs after a
/// rollout rather than inside it.
const QUIET_FOR: Duration = Duration::from_millis(120);

/// The store's connection checkpoints by itself, in a commit, once the WAL
/// holds this many pages (16 MiB of 4 KiB pages; SQLite's default is
/// 1,000): only a store written without pause gets there.
const BACKSTOP_PAGES: u32 = 4096;

/// What SQLite cuts the WAL file back to when it starts it again after a
/// complete checkpoint (`journal_size_limit`): by itself the file keeps
/// the size of the largest burst it ever held.
const WAL_KEPT_BYTES: u64 = 4 << 20;

/// The checkpoint thread; dropping it (with the store) ends the thread.
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
    /// Held by the thread around each of its checkpoints.
    gate: Arc<Mutex<()>>,
}

impl Checkpointer {
    /// Starts the thread for the store at `path` and, once its connection
    /// is open, turns the main connection's automatic checkpoints off.
    /// `None` (and automatic checkpoints kept) when it cannot start.
    pub(super) fn start(path: &Path, main: &Connection) -> Option<Checkpointer> {
        let own = match open(path) {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "store: cannot open a checkpoint connection; SQLite checkpoints inside commits");
                return None;
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let wal = wal_path(path);
        let gate = Arc::new(Mutex::new(()));
        let held = gate.clone();
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(&own, &wal, &held, &stopped));
        if let Err(error) = spawned {
            tracing::warn!(%error, "store: cannot start the checkpoint thread; SQLite checkpoints inside commits");
            return None;
        }
        let pragmas = format!(
            "PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}; PRAGMA journal_size_limit = {WAL_KEPT_BYTES};"
        );
        if let Err(error) = main.execute_batch(&pragmas) {
            tracing::warn!(%error, "store: cannot move automatic checkpoints; SQLite checkpoints inside commits");
        }
        Some(Checkpointer { _stop: stop, gate })
    }

    /// Holds the thread off its checkpoints until the guard is dropped
    /// (waiting for one under way to end).
    pub(super) fn pause(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;")?;
    Ok(connection)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Checkpoints the WAL written since the last checkpoint once it has been
/// quiet for [`QUIET_FOR`], until the store is dropped. A write is seen as
/// a change of the WAL's length or modification time (its length alone
/// does not tell: once a checkpoint has copied every frame, SQLite writes
/// the WAL again from its beginning).
fn run(connection: &Connection, wal: &Path, gate: &Mutex<()>, stopped: &mpsc::Receiver<()>) {
    // The WAL as the last complete checkpoint left it, as last looked at,
    // and when that look first saw it so.
    let mut seen = None;
    let mut looked = None;
    let mut unchanged_since = Instant::now();
    loop {
        match stopped.recv_timeout(LOOK_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            // The store was dropped (or the sender sent, which it never does).
            _ => return,
        }
        let now = std::fs::metadata(wal)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if now != looked {
            looked = now;
            unchanged_since = Instant::now();
        }
        if now.is_none() || now == seen || unchanged_since.elapsed() < QUIET_FOR {
            continue;
        }
        let checkpointed = {
            let _held = gate.lock().unwrap_or_else(|p| p.into_inner());
            connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
        };
        match checkpointed {
            Ok((frames, copied)) => {
                tracing::trace!(frames, copied, "store: WAL checkpointed");
                // Not every frame copied (a reader held some): try again
                // after another quiet spell, not at every look.
                if frames == copied {
                    seen = now;
                } else {
                    unchanged_since = Instant::now();
                }
            }
            Err(error) => tracing::warn!(%error, "store: WAL checkpoint failed; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::db::params;
    use super::super::Store;
    use super::{wal_path, BACKSTOP_PAGES, QUIET_FOR, WAL_KEPT_BYTES};
    use std::time::{Duration, Instant};

    /// A store written without a pause never gives the thread its quiet
    /// spell: the store's connection checkpoints at the backstop, and the
    /// WAL stays bounded.
    #[tokio::test]
    async fn a_store_written_without_pause_keeps_its_wal_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        let store = Store::open(&path).expect("open");
        store
            .call(|c| c.execute_batch("CREATE TABLE filler (x BLOB)"))
            .await
            .expect("table");
        let wal = wal_path(&path);
        let mut largest = 0;
        let limit = u64::from(BACKSTOP_PAGES) * 4096;
        // Five times the backstop, 400 KB per call.
        for _ in 0..5 * limit / 400_000 {
            store
                .call(|c| {
                    for _ in 0..100 {
                        c.execute("INSERT INTO filler VALUES (randomblob(4000))", &[])?;
                    }
                    Ok(())
                })
                .await
                .expect("fill");
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // Unchecked, the WAL would hold every frame written (about three
        // 4 KiB pages per row: some 250 MB); checkpointed at the backstop,
        // it holds the backstop and one call's rows.
        assert!(
            largest <= 2 * limit,
            "the WAL grew to {largest} bytes under a continuous writer"
        );
        // Once quiet, the thread checkpoints what is left, and the next
        // write (a row, so that it always writes a page) starts the WAL
        // again, cut back to what SQLite keeps. Quiet is a span of time, so
        // the test leaves one between its writes.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(QUIET_FOR * 2).await;
            store
                .call(|c| c.execute("INSERT INTO filler VALUES (x'00')", &[]))
                .await
                .expect("write");
            if std::fs::metadata(&wal).map_or(0, |m| m.len()) <= WAL_KEPT_BYTES + 1_000_000 {
                break;
            }
            assert!(Instant::now() < deadline, "the WAL was never started again");
        }
    }

    /// What a commit does with a WAL of a few MiB: on the store's own
    /// connection, nothing (its automatic checkpoint waits for the
    /// backstop); the thread copies the WAL into the main file by itself.
    #[tokio::test]
    async fn the_wal_reaches_the_main_file_without_a_checkpoint_in_any_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.sqlite");
        let store = Store::open(&path).expect("open");
        let automatic: i64 = store
            .call(|c| c.query_row("PRAGMA wal_autocheckpoint", params![], |r| r.get(0)))
            .await
            .expect("pragma");
        assert_eq!(
            automatic,
            i64::from(BACKSTOP_PAGES),
            "the store's connection checkpoints in its commits only at the backstop"
        );
        let before = std::fs::metadata(&path).expect("store").len();
        store
            .call(|c| {
                c.execute_batch("CREATE TABLE filler (x BLOB)")?;
                for _ in 0..600 {
                    c.execute("INSERT INTO filler VALUES (randomblob(4000))", &[])?;
                }
                Ok(())
            })
            .await
            .expect("fill");
        // Pages reach the main file only through a checkpoint.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).expect("store").len() < before + 2_000_000 {
            assert!(
                Instant::now() < deadline,
                "no checkpoint copied the WAL in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
