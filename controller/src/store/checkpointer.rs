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
//! Here the main connection never checkpoints (`wal_autocheckpoint = 0`);
//! a thread with a connection of its own runs `wal_checkpoint(PASSIVE)`
//! whenever the WAL has grown since its last look. A passive checkpoint
//! waits for no reader or writer, so the store's connection is never
//! blocked by it, and SQLite restarts the WAL from its beginning once a
//! checkpoint has copied every frame, so the file stays bounded as before.
//! If the thread cannot open its connection, the main connection keeps
//! SQLite's automatic checkpoints: durability and size are never traded.
//!
//! A checkpoint the store runs itself (compaction's `TRUNCATE`, which cuts
//! the main file) pauses the thread first ([`Checkpointer::pause`]): while
//! one connection checkpoints, SQLite answers another's checkpoint "busy" at
//! once, without waiting and without cutting anything.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

/// How often the thread looks at the WAL: a checkpoint waits at most this
/// long after a commit, and a busy store gets at most this many fsyncs of
/// its main file per second.
const LOOK_EVERY: Duration = Duration::from_millis(200);

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
        if let Err(error) = main.execute_batch("PRAGMA wal_autocheckpoint = 0") {
            tracing::warn!(%error, "store: cannot turn automatic checkpoints off; SQLite checkpoints inside commits");
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

/// Checkpoints whenever the WAL was written since the last look, until the
/// store is dropped. (Its length alone does not tell: once a checkpoint has
/// copied every frame, SQLite writes the WAL again from its beginning.)
fn run(connection: &Connection, wal: &Path, gate: &Mutex<()>, stopped: &mpsc::Receiver<()>) {
    let mut seen = None;
    loop {
        match stopped.recv_timeout(LOOK_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            // The store was dropped (or the sender sent, which it never does).
            _ => return,
        }
        let now = std::fs::metadata(wal)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if now.is_none() || now == seen {
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
                // Not every frame copied (a reader held some): look again.
                if frames == copied {
                    seen = now;
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
    use std::time::{Duration, Instant};

    /// What a commit does with a full WAL: on the store's own connection,
    /// nothing (no automatic checkpoint); the thread copies the WAL into the
    /// main file by itself.
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
            automatic, 0,
            "the store's connection must not checkpoint in its commits"
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
