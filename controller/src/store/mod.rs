//! The controller's store: every SQL statement the controller runs lives in
//! this module, and only the controller touches it (ARCHITECTURE.md).
//!
//! SQLite, embedded, created on first start with its migrations. Calls are
//! short and run on the blocking pool so they never stall the async workers.

mod agent_streams;
mod approvals;
mod audit;
mod audit_key;
mod checkpointer;
mod compaction;
#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod conformance;
mod controllers;
#[cfg(test)]
mod corruption_tests;
pub mod db;
mod deployed;
mod drift_scans;
mod escape;
mod faults;
mod file_mode;
mod fleets;
mod gates;
mod history_index;
pub mod leases;
mod metrics;
mod migrations;
mod notices;
mod operations;
mod perf;
mod requests;
#[cfg(test)]
mod restart_tests;
mod retention;
mod side_deliveries;
mod status;
mod watches;

/// Where the audit key lives by default is the config's to say
/// (`config::default_audit_key_path`); the tests here open stores with it.
#[cfg(test)]
pub use crate::config::default_audit_key_path as default_key_path;
pub use agent_streams::{AgentStream, Delivery, LiveStream, StreamTarget};
pub use approvals::{Approval, PendingRollout};
pub use audit::{AuditEntry, BrokenChain, LogVerdict};
pub use compaction::PAGES_PER_STEP;
pub use controllers::{Settle, Sweep};
pub use db::{BlobError, CorruptBlob};
pub use drift_scans::DriftGauge;
pub use faults::NEVER_OFFERED;
pub use fleets::{fleet_state, policy as fleet_policy, FleetRecord, FleetTargetRow};
#[cfg(test)]
pub use history_index::routine_key;
pub use metrics::{FinishedRollout, RolloutChange, StateCount};
pub use perf::RecordedProbe;
pub use requests::request_state;
pub use retention::Pruned;
pub use side_deliveries::{SideAnswer, SideDelivery};
pub use status::JobRollout;
pub use watches::{covers_any, WatchProgress, WatchRecord};

use std::path::Path;
use std::sync::{Arc, Mutex};

use db::{params, Conn};
use pgrollout_shared::proto::StepStatus;
use prost::Message;

use crate::domain::agent_report::{Outcome, ReportedEvent, ReportedResult};
use crate::domain::plan::Plan;

/// A `plans` row: the plan's id and metadata, and its content encoded as
/// the wire's `Plan` (the blob every reader decodes).
pub struct PlanRow {
    pub plan_id: String,
    pub label: String,
    pub commit_sha: String,
    pub content: Vec<u8>,
    /// Whether the label names every routine (`plans.names_routines`,
    /// migration 0014): what the metrics count the plan's rollouts under.
    pub names_routines: Option<bool>,
}

/// What the store can keep as a plan.
pub trait StoredPlan {
    fn row(&self) -> PlanRow;
}

impl StoredPlan for Plan {
    fn row(&self) -> PlanRow {
        PlanRow {
            plan_id: self.plan_id.clone(),
            label: self.label.clone(),
            commit_sha: self.commit_sha.clone(),
            content: self.to_wire().encode_to_vec(),
            names_routines: metrics::label_names_routines(
                &self.label,
                self.routines
                    .iter()
                    .map(|r| (r.identity.schema.as_str(), r.identity.name.as_str())),
            ),
        }
    }
}

impl StoredPlan for pgrollout_shared::proto::Plan {
    fn row(&self) -> PlanRow {
        PlanRow {
            plan_id: self.plan_id.clone(),
            label: self.label.clone(),
            commit_sha: self.commit_sha.clone(),
            content: self.encode_to_vec(),
            names_routines: metrics::label_names_routines(
                &self.label,
                self.routines
                    .iter()
                    .map(|r| (r.schema.as_str(), r.name.as_str())),
            ),
        }
    }
}

/// A `job_events` row.
pub struct EventRow {
    pub job_id: String,
    pub attempt: u32,
    pub seq: u64,
    pub step: String,
    pub status: StepStatus,
    pub message: String,
    pub duration_ms: u64,
    pub at_unix_ms: i64,
    /// The smoke reports and progress counts, encoded as a `JobEvent`
    /// carrying only those (migration 0022); `None` when it had none.
    pub detail: Option<Vec<u8>>,
}

/// An event's smoke reports and progress counts as stored in `detail`.
fn event_detail(
    smoke: &[pgrollout_shared::proto::SmokeReport],
    done: u32,
    total: u32,
) -> Option<Vec<u8>> {
    if smoke.is_empty() && done == 0 && total == 0 {
        return None;
    }
    let detail = pgrollout_shared::proto::JobEvent {
        smoke: smoke.to_vec(),
        done,
        total,
        ..Default::default()
    };
    Some(detail.encode_to_vec())
}

/// What the store can keep as a job's event: an agent's, checked at the
/// edge (`ReportedEvent`), or a wire event as is (`store-fill`'s synthetic
/// rows and test fixtures).
pub trait StoredEvent {
    fn row(&self) -> EventRow;
}

impl StoredEvent for ReportedEvent {
    fn row(&self) -> EventRow {
        EventRow {
            job_id: self.job.id.clone(),
            attempt: self.job.attempt,
            seq: self.seq,
            step: self.step.clone(),
            status: self.status.into(),
            message: self.message.clone(),
            duration_ms: self.duration_ms,
            at_unix_ms: self.at_unix_ms,
            detail: event_detail(&self.smoke, self.done, self.total),
        }
    }
}

impl StoredEvent for pgrollout_shared::proto::JobEvent {
    fn row(&self) -> EventRow {
        EventRow {
            job_id: self.job_id.clone(),
            attempt: self.attempt,
            seq: self.seq,
            step: self.step.clone(),
            status: self.status(),
            message: self.message.clone(),
            duration_ms: self.duration_ms,
            at_unix_ms: self.at_unix_ms,
            detail: event_detail(&self.smoke, self.done, self.total),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error")]
    Database(#[source] db::Error),
    /// A blob this controller wrote no longer decodes: the store is damaged.
    /// Never read as an empty plan, result or sample (issue 14).
    #[error("the controller's store is corrupt")]
    Corrupt(#[source] CorruptBlob),
    #[error("cannot open the store at {path}")]
    Open {
        path: String,
        #[source]
        source: db::Error,
    },
    /// The PostgreSQL store could not be reached; `store` is its URL
    /// without the password.
    #[error("cannot connect to the store at {store}")]
    Connect {
        store: String,
        #[source]
        source: db::postgres::ConnectError,
    },
    #[error("store task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot make the store's files private (0600)")]
    Permissions(#[source] std::io::Error),
    #[error(transparent)]
    AuditKey(#[from] audit_key::AuditKeyError),
    /// A singleton's write refused for its lease's fence (issue 18): never
    /// retried, the singleton stops on this controller.
    #[error(transparent)]
    FenceLost(#[from] leases::FenceLost),
}

impl From<db::Error> for StoreError {
    /// A corrupt blob travels out of a row closure as the facade's
    /// `Corrupt` and is told apart here, so every caller sees
    /// `StoreError::Corrupt`.
    fn from(error: db::Error) -> Self {
        match error {
            db::Error::Corrupt(corrupt) => StoreError::Corrupt(*corrupt),
            other => StoreError::Database(other),
        }
    }
}

/// Decodes a stored message, or fails the read naming the message and row:
/// every blob in the store was encoded by this controller, so one that does
/// not decode is damage to report, never a default to carry on with.
pub(crate) fn decode_blob<M: Message + Default>(
    column: usize,
    bytes: &[u8],
    what: &'static str,
    row: impl FnOnce() -> String,
) -> db::Result<M> {
    M::decode(bytes).map_err(|source| corrupt(column, what, row(), source.into()))
}

/// Decodes a stored plan into the engine's type: a plan that no longer
/// decodes, or no longer passes the checks it passed on arrival, is damage.
pub(crate) fn decode_plan(
    column: usize,
    bytes: &[u8],
    row: impl FnOnce() -> String,
) -> db::Result<Plan> {
    let wire = match pgrollout_shared::proto::Plan::decode(bytes) {
        Ok(wire) => wire,
        Err(source) => return Err(corrupt(column, "plan", row(), source.into())),
    };
    match Plan::try_from(wire) {
        Ok(plan) => Ok(plan),
        Err(source) => Err(corrupt(column, "plan", row(), source.into())),
    }
}

/// `column` is kept for the callers' sake (which column they decoded);
/// the row and message name the damage well enough for an operator.
fn corrupt(_column: usize, what: &'static str, row: String, source: BlobError) -> db::Error {
    CorruptBlob { what, row, source }.into()
}

#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// Tells this opened store from another in the same process, for state
    /// kept above the store per store (`crate::metrics::summary`).
    instance: u64,
    /// Authenticates every audit entry; lives outside the store.
    audit_key: Arc<audit_key::AuditKey>,
}

/// Where the store's connections come from.
enum Backend {
    /// One connection: SQLite serialises writers anyway, and WAL lets the
    /// one connection's reads proceed beside nothing else. The WAL is
    /// checkpointed by a thread of its own, off this connection.
    Sqlite {
        connection: Mutex<Conn>,
        checkpoints: Option<checkpointer::Checkpointer>,
    },
    Postgres(db::postgres::PgPool),
}

impl Backend {
    fn with<R>(&self, work: impl FnOnce(&mut Conn) -> db::Result<R>) -> db::Result<R> {
        match self {
            Backend::Sqlite { connection, .. } => {
                let mut guard = connection.lock().unwrap_or_else(|p| p.into_inner());
                work(&mut guard)
            }
            Backend::Postgres(pool) => pool.with(work),
        }
    }

    /// As [`Backend::with`], the checkpoint thread held off meanwhile: for
    /// work that checkpoints the WAL itself.
    fn with_checkpoints_paused<R>(
        &self,
        work: impl FnOnce(&mut Conn) -> db::Result<R>,
    ) -> db::Result<R> {
        match self {
            Backend::Sqlite {
                connection,
                checkpoints,
            } => {
                let mut guard = connection.lock().unwrap_or_else(|p| p.into_inner());
                let _paused = checkpoints.as_ref().map(|c| c.pause());
                work(&mut guard)
            }
            Backend::Postgres(pool) => pool.with(work),
        }
    }
}

/// A rollout as first recorded.
pub struct NewRollout<'a> {
    pub id: &'a str,
    pub plan_id: &'a str,
    pub kind: &'a str,
    pub environment: &'a str,
    pub zone: &'a str,
    pub target: &'a str,
    pub actor: &'a str,
    pub trace_id: &'a str,
    pub created_at: i64,
}

#[cfg(test)]
impl<'a> NewRollout<'a> {
    /// A deploy to dev's `main` target by operator `t`, as store tests
    /// record one.
    pub fn dev_deploy(id: &'a str, plan_id: &'a str, created_at: i64) -> Self {
        NewRollout {
            id,
            plan_id,
            kind: "deploy",
            environment: "dev",
            zone: "dev",
            target: "main",
            actor: "operator t",
            trace_id: "t",
            created_at,
        }
    }
}

/// Rollout states (DESIGN §3). Only those in use so far are listed.
pub mod state {
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    /// The agent vanished mid-job; its ledger decides once it reports.
    pub const UNKNOWN: &str = "unknown";
    /// Every change it made was undone by `pgrollout rollback`.
    pub const ROLLED_BACK: &str = "rolled_back";
    pub const RUNNING: &str = "running";

    /// Every state `pgrollout rollouts --state` can filter on: a rollout's,
    /// then a request's that never became a rollout (or not yet).
    pub const LISTABLE: &[&str] = &[
        RUNNING,
        SUCCEEDED,
        FAILED,
        UNKNOWN,
        ROLLED_BACK,
        crate::store::request_state::AWAITING_APPROVAL,
        crate::store::request_state::SCHEDULED,
        crate::store::request_state::APPROVED,
        crate::store::request_state::STARTED,
        crate::store::request_state::REJECTED,
        crate::store::request_state::CANCELLED,
        crate::store::request_state::REFUSED,
    ];
}

impl Store {
    /// Opens (creating if needed) the store with its audit key beside it.
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Store::open_with_audit_key(path, &default_key_path(path))
    }

    /// Opens (creating if needed) the store, runs pending migrations, and
    /// opens (creating on first start) the audit key at `key_path`.
    pub fn open_with_audit_key(path: &Path, key_path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        file_mode::make_private(path).map_err(StoreError::Permissions)?;
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let connection = rusqlite::Connection::open(path).map_err(|e| open_error(e.into()))?;
        // First, before WAL and before any table: a new store is created
        // with incremental auto-vacuum, an older one rewritten once.
        compaction::convert(&connection, path).map_err(|e| open_error(e.into()))?;
        // WAL with synchronous=NORMAL: durable across a process crash, and a
        // commit costs no fsync, so recording every event stays cheap.
        connection
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;")
            .map_err(|e| open_error(e.into()))?;
        // Statements are prepared once and kept (`Conn::prepare` caches).
        connection.set_prepared_statement_cache_capacity(128);
        let checkpointer = checkpointer::Checkpointer::start(path, &connection);
        let mut connection = Conn::Sqlite(connection);
        migrations::run(&mut connection).map_err(open_error)?;
        let audit_key = audit::open_key(&mut connection, key_path)?;
        Ok(Store::new(
            Backend::Sqlite {
                connection: Mutex::new(connection),
                checkpoints: checkpointer,
            },
            audit_key,
        ))
    }

    /// Opens the store the `[store]` table names: the SQLite file, or the
    /// PostgreSQL database at `url` (errors show it without its password).
    pub fn open_configured(
        config: &crate::config::StoreConfig,
        key_path: &Path,
    ) -> Result<Self, StoreError> {
        match &config.url {
            None => Store::open_with_audit_key(&config.path, key_path),
            Some(url) => {
                let target = db::postgres::PgTarget::parse(url, config.ca_file.clone()).map_err(
                    |source| StoreError::Connect {
                        store: crate::config::redacted_url(url),
                        source,
                    },
                )?;
                Store::open_postgres(target, key_path)
            }
        }
    }

    /// Opens the store on a PostgreSQL server (issue 18), runs its pending
    /// migrations, and opens (creating on first start) the audit key.
    pub fn open_postgres(
        target: db::postgres::PgTarget,
        key_path: &Path,
    ) -> Result<Self, StoreError> {
        let store = target.describe();
        let pool = db::postgres::PgPool::open(target).map_err(|source| StoreError::Connect {
            store: store.clone(),
            source,
        })?;
        let open_error = |source| StoreError::Open {
            path: store.clone(),
            source,
        };
        // Off the async workers: the pool blocks on its own runtime.
        let audit_key = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pool.with(migrations::run).map_err(open_error)?;
                    let mut key = None;
                    let opened = pool.with(|c| {
                        key = Some(audit::open_key(c, key_path));
                        Ok(())
                    });
                    opened.map_err(open_error)?;
                    key.unwrap_or_else(|| unreachable!("set by the closure above"))
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        Ok(Store::new(Backend::Postgres(pool), audit_key))
    }

    fn new(backend: Backend, audit_key: audit_key::AuditKey) -> Self {
        static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Store {
            backend: Arc::new(backend),
            instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            audit_key: Arc::new(audit_key),
        }
    }

    /// Unique per opened store in this process (clones share it).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    async fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Conn) -> db::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let backend = self.backend.clone();
        let result = tokio::task::spawn_blocking(move || backend.with(work)).await??;
        Ok(result)
    }

    /// As [`Store::call`], with the WAL's checkpoint thread held off: a
    /// checkpoint run by `work` then never meets the thread's (SQLite would
    /// answer it busy at once, leaving the WAL and the file as they were).
    async fn call_checkpointing<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Conn) -> db::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let backend = self.backend.clone();
        let result =
            tokio::task::spawn_blocking(move || backend.with_checkpoints_paused(work)).await??;
        Ok(result)
    }

    /// Keeps a plan once per id: the engine's (`domain::plan::Plan`), or a
    /// wire plan as is (`store-fill`'s synthetic plans and test fixtures).
    pub async fn save_plan(&self, plan: &impl StoredPlan, now: i64) -> Result<(), StoreError> {
        let PlanRow {
            plan_id,
            label,
            commit_sha,
            content,
            names_routines,
        } = plan.row();
        self.call(move |c| {
            c.execute(
                "INSERT INTO plans (plan_id, label, commit_sha, content, created_at, names_routines)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (plan_id) DO NOTHING",
                params![plan_id, label, commit_sha, content, now, names_routines],
            )
            .map(|_| ())
        })
        .await
    }

    /// Records a rollout and its first job in one transaction.
    pub async fn create_rollout(
        &self,
        rollout: NewRollout<'_>,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let r = (
            rollout.id.to_owned(),
            rollout.plan_id.to_owned(),
            rollout.kind.to_owned(),
            rollout.environment.to_owned(),
            rollout.zone.to_owned(),
            rollout.target.to_owned(),
            rollout.actor.to_owned(),
            rollout.trace_id.to_owned(),
            rollout.created_at,
        );
        let job_id = job_id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO rollouts (id, plan_id, kind, environment, zone, target, actor, trace_id, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9)",
                params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8],
            )?;
            tx.execute(
                "INSERT INTO jobs (id, attempt, rollout_id, kind, zone, target, state, offered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'offered', ?7)",
                params![job_id, attempt, r.0, r.2, r.4, r.5, r.8],
            )?;
            tx.commit()
        })
        .await
    }

    /// Claims an offered job for an agent (compare-and-set). `false` means
    /// someone else holds it or it is no longer offered: the claim is refused.
    pub async fn claim_job(
        &self,
        job_id: &str,
        attempt: u32,
        agent_name: &str,
        zone: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (job_id, agent_name, zone) =
            (job_id.to_owned(), agent_name.to_owned(), zone.to_owned());
        self.call(move |c| {
            let claimed = c.execute(
                "UPDATE jobs SET state = 'running', agent_name = ?3, accepted_at = ?5
                 WHERE id = ?1 AND attempt = ?2 AND zone = ?4
                   AND (state = 'offered' OR (state = 'running' AND agent_name = ?3))",
                params![job_id, attempt, agent_name, zone, now],
            )?;
            Ok(claimed == 1)
        })
        .await
    }

    /// Stores an event; `false` if (job, seq) was already recorded.
    pub async fn record_event(&self, event: &impl StoredEvent) -> Result<bool, StoreError> {
        let e = event.row();
        self.call(move |c| {
            let inserted = c.execute(
                "INSERT INTO job_events (job_id, seq, attempt, step, status, message, duration_ms, at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![
                    e.job_id,
                    e.seq as i64,
                    e.attempt,
                    e.step,
                    e.status.as_str_name(),
                    e.message,
                    e.duration_ms as i64,
                    e.at_unix_ms,
                    e.detail
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Records a job's result and settles its rollout, then indexes the
    /// routine versions it carries ([`Store::record_result`], then
    /// [`Store::index_versions_of`]); `false` if the job had already
    /// finished (a duplicate result is dropped).
    pub async fn finish_job(&self, result: &ReportedResult, now: i64) -> Result<bool, StoreError> {
        let recorded = self.record_result(result, now).await?;
        if recorded && IndexedResult::has_versions(result) {
            self.index_versions_of(IndexedResult::of(result)).await?;
        }
        Ok(recorded)
    }

    /// Records a job's result and settles its rollout; `false` if the job
    /// had already finished (a duplicate result is dropped). The result is
    /// stored whole, as the agent's wire message (the job's blob, relayed
    /// as is by `pgrollout status` and the history); what the store reads of
    /// it, it reads from the checked payload. Its routine versions are left
    /// marked for [`Store::index_versions_of`]: the agent link relays the
    /// result to the operator first (issue 15 item 9: the index of a
    /// thousand routines was ~14 ms of the operator's wait).
    pub async fn record_result(
        &self,
        result: &ReportedResult,
        now: i64,
    ) -> Result<bool, StoreError> {
        let exit_code = result.outcome.exit_code().code();
        let succeeded = result.outcome == Outcome::Succeeded;
        let (job_id, attempt, message, bytes) = (
            result.job.id.clone(),
            result.job.attempt,
            result.payload.message.clone(),
            result.wire().encode_to_vec(),
        );
        let payload = result.payload.clone();
        // Marked only when it carries versions to index.
        let pending = IndexedResult::has_versions(result);
        let state = if exit_code == 0 {
            state::SUCCEEDED
        } else {
            state::FAILED
        };
        self.call(move |c| {
            let tx = c.transaction()?;
            let updated = tx.execute(
                // A job settled without a result (abandoned, or in doubt) still
                // takes the one its agent reports late: the record corrects itself.
                "UPDATE jobs SET state = 'finished', finished_at = ?3, result = ?4, versions_pending = ?5
                 WHERE id = ?1 AND attempt = ?2 AND (state <> 'finished' OR result IS NULL)",
                params![job_id, attempt, now, bytes, i64::from(pending)],
            )?;
            if updated == 1 {
                tx.execute(
                    // Only the latest attempt speaks for the rollout; an
                    // operator's resolution is not overwritten.
                    "UPDATE rollouts SET state = ?2, exit_code = ?3, message = ?4, finished_at = ?5
                     WHERE id = (SELECT rollout_id FROM jobs WHERE id = ?1 AND attempt = ?6)
                       AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND attempt > ?6)
                       AND state IN ('running', 'unknown', 'failed')",
                    params![job_id, state, exit_code, message, now, attempt],
                )?;
                history_index::index_running_of(&tx, &job_id, succeeded, &payload)?;
            }
            tx.commit()?;
            Ok(updated == 1)
        })
        .await
    }

    /// Indexes the routine versions of a result [`Store::record_result`]
    /// recorded, once: the mark is cleared by compare-and-set in the same
    /// transaction, so a second call (another controller, the pass at
    /// start) finds nothing to do.
    pub async fn index_versions_of(&self, result: IndexedResult) -> Result<(), StoreError> {
        let IndexedResult {
            job_id,
            attempt,
            payload,
        } = result;
        self.call(move |c| {
            let tx = c.transaction()?;
            if history_index::claim_pending(&tx, &job_id, attempt)? {
                history_index::index_versions_of(&tx, &job_id, &payload)?;
            }
            tx.commit()
        })
        .await
    }

    /// Indexes every recorded result still marked (a controller that died
    /// between recording a result and indexing it), oldest first; how many.
    pub async fn index_left_pending(&self) -> Result<usize, StoreError> {
        self.call(history_index::index_left_pending).await
    }

    /// Ends a job that never produced a result (declined, not accepted in
    /// time, agent lost) with the given rollout state.
    pub async fn abandon_job(
        &self,
        job_id: &str,
        attempt: u32,
        rollout_state: &'static str,
        exit_code: i32,
        message: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (job_id, message) = (job_id.to_owned(), message.to_owned());
        let job_state = if rollout_state == state::UNKNOWN {
            "unknown"
        } else {
            "finished"
        };
        self.call(move |c| {
            let tx = c.transaction()?;
            let updated = tx.execute(
                "UPDATE jobs SET state = ?3, finished_at = ?4 WHERE id = ?1 AND attempt = ?2 AND state <> 'finished'",
                params![job_id, attempt, job_state, now],
            )?;
            if updated == 1 {
                tx.execute(
                    "UPDATE rollouts SET state = ?2, exit_code = ?3, message = ?4, finished_at = ?5
                     WHERE id = (SELECT rollout_id FROM jobs WHERE id = ?1 AND attempt = ?6)",
                    params![job_id, rollout_state, exit_code, message, now, attempt],
                )?;
            }
            tx.commit()
        })
        .await
    }
}

/// What [`Store::index_versions_of`] reads of a recorded result.
pub struct IndexedResult {
    pub job_id: String,
    pub attempt: u32,
    pub payload: crate::domain::result_payload::ResultPayload,
}

impl IndexedResult {
    /// Whether `result` carries routine versions to index at all (a failed
    /// or plan-less job's does not: nothing is marked, nothing to call).
    pub fn has_versions(result: &ReportedResult) -> bool {
        result.payload.applied.iter().any(|a| a.has_digest())
    }

    pub fn of(result: &ReportedResult) -> IndexedResult {
        IndexedResult {
            job_id: result.job.id.clone(),
            attempt: result.job.attempt,
            payload: result.payload.clone(),
        }
    }
}
