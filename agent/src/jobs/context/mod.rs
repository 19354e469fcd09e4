//! What a running job has: its identity and target, the numbered step
//! events it streams (`JobContext`), the failure that carries its outcome
//! (`JobFailure`), its lease (`fence.rs`), its spans (`spans.rs`), the seal
//! on its transaction (`txn_seal.rs`) and the connection opened for it as it
//! was taken on (`early_connection.rs`). The typed failure is `failure.rs`. The bottom of `jobs/`: every step and
//! job kind builds on it, and it imports none of them. `fence.rs` adds methods
//! to `JobContext`, so this folder is one module split over files.

pub mod deploy_lock;
mod early_connection;
mod failure;
mod fence;
mod spans;
pub mod txn_seal;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrollout_shared::job::{now_unix_ms, Job};
use pgrollout_shared::proto::{
    agent_message::Body, AgentMessage, JobEvent, JobResult, SmokeReport, StepStatus,
};
use tokio_postgres::error::SqlState;

pub use early_connection::EarlyConnection;
pub use failure::JobFailure;

use crate::config::{AgentConfig, TargetConfig};
use crate::outbox::Outbox;

/// A duration in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The `connect` step's message: the target and the major version it runs.
pub fn connected(target: &TargetConfig, conn: &crate::sql::TargetConnection) -> String {
    format!(
        "connected to target {} (PostgreSQL {})",
        target.name,
        conn.version.major()
    )
}

/// What a running job needs: its identity, its target, and the event stream.
pub struct JobContext {
    pub job: Job,
    pub target: TargetConfig,
    pub config: Arc<AgentConfig>,
    outbox: Arc<Outbox>,
    /// The job's span and its steps' (`spans.rs`).
    spans: spans::JobSpans,
    seq: AtomicU64,
    started: Instant,
    /// When the last progress event went out: they are throttled.
    last_progress: std::sync::Mutex<Option<Instant>>,
    /// Each routine's own time so far (CREATE, smoke calls), by identity,
    /// for the per-routine rows of a batch's report.
    routine_times: std::sync::Mutex<std::collections::HashMap<String, std::time::Duration>>,
    fence: fence::Fence,
    /// The connection opened when the job was taken on, until the
    /// `connect` step takes it.
    early_connection: std::sync::Mutex<EarlyConnection>,
}

impl JobContext {
    /// The controller the agent is on, or was last on (issue 18: it may
    /// have several): the one a refusal names.
    pub fn controller(&self) -> String {
        self.outbox.last_controller()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Streams one event (kept in the outbox until acknowledged). A failed
    /// step with a database error behind it goes through [`Self::failed`]
    /// (or [`Self::event_coded`]), which carry its SQLSTATE to the span.
    pub fn event(
        &self,
        step: &str,
        status: StepStatus,
        message: impl Into<String>,
        duration_ms: u64,
        smoke: Vec<SmokeReport>,
    ) {
        self.event_coded(step, status, message, duration_ms, smoke, None);
    }

    /// The end of a smoke step: its span sees every report; its event
    /// carries only those that did not pass, since the job's result carries
    /// them all. A thousand routines' passing reports (160 KB) made each
    /// such event one more copy to journal and fsync, send, check, store and
    /// relay while the deploy ran (issue 15 item 9), and nothing reads a
    /// step's passing reports from its event.
    pub fn smoke_event(
        &self,
        step: &str,
        status: StepStatus,
        message: impl Into<String>,
        duration_ms: u64,
        reports: &[SmokeReport],
    ) {
        self.spans
            .step_event(step, status, duration_ms, None, reports);
        let failed = reports.iter().filter(|r| !r.passed).cloned().collect();
        self.push_event(step, status, message.into(), duration_ms, failed);
    }

    /// The failed event of `step` that stopped at `failure`: its text for
    /// the operator, its SQLSTATE (typed) for the span.
    pub fn failed(&self, step: &str, failure: &JobFailure, duration_ms: u64) {
        self.event_coded(
            step,
            StepStatus::Failed,
            failure.message(),
            duration_ms,
            Vec::new(),
            failure.sql_state(),
        );
    }

    /// An event whose message the step composed itself, with the SQLSTATE
    /// of the server error it reports (if any). The span reads the code,
    /// never the message (which can quote data).
    pub fn event_coded(
        &self,
        step: &str,
        status: StepStatus,
        message: impl Into<String>,
        duration_ms: u64,
        smoke: Vec<SmokeReport>,
        sqlstate: Option<&SqlState>,
    ) {
        self.spans
            .step_event(step, status, duration_ms, sqlstate, &smoke);
        self.push_event(step, status, message.into(), duration_ms, smoke);
    }

    fn push_event(
        &self,
        step: &str,
        status: StepStatus,
        message: String,
        duration_ms: u64,
        smoke: Vec<SmokeReport>,
    ) {
        let event = JobEvent {
            job_id: self.job.id.clone(),
            attempt: self.job.attempt,
            seq: self.next_seq(),
            step: step.to_owned(),
            status: status as i32,
            message,
            duration_ms,
            at_unix_ms: now_unix_ms(),
            smoke,
            done: 0,
            total: 0,
        };
        self.outbox.push(AgentMessage {
            body: Some(Body::Event(event)),
        });
    }

    /// Adds `took` to the time spent on the routine `identity`.
    pub fn add_routine_time(&self, identity: &str, took: std::time::Duration) {
        let mut times = self.routine_times.lock().unwrap_or_else(|p| p.into_inner());
        *times.entry(identity.to_owned()).or_default() += took;
    }

    /// The time spent on `identity` so far, in microseconds.
    pub fn routine_time_us(&self, identity: &str) -> u64 {
        let times = self.routine_times.lock().unwrap_or_else(|p| p.into_inner());
        times
            .get(identity)
            .map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or_default()
    }

    /// Adds each smoke report's time to its routine's.
    pub fn add_smoke_times(&self, reports: &[SmokeReport]) {
        for report in reports {
            self.add_routine_time(
                &report.routine,
                std::time::Duration::from_millis(report.duration_ms),
            );
        }
    }

    /// Reports `done` of `total` routines through `step`: at most every
    /// 100 ms, and always for the last one, so a thousand routines make a
    /// handful of events rather than a thousand.
    pub fn progress(&self, step: &str, done: usize, total: usize) {
        if total == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut last = self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| now.duration_since(at).as_millis() >= 100);
            if done < total && !due {
                return;
            }
            *last = Some(now);
        }
        let event = JobEvent {
            job_id: self.job.id.clone(),
            attempt: self.job.attempt,
            seq: self.next_seq(),
            step: step.to_owned(),
            status: StepStatus::Started as i32,
            message: String::new(),
            duration_ms: millis(self.started.elapsed()),
            at_unix_ms: now_unix_ms(),
            smoke: Vec::new(),
            done: u32::try_from(done).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
        };
        self.outbox.push(AgentMessage {
            body: Some(Body::Event(event)),
        });
    }

    /// Runs one step: a started event, then succeeded or failed with its
    /// duration. The step's success message comes from `describe`.
    pub async fn step<T>(
        &self,
        name: &str,
        work: impl Future<Output = Result<T, JobFailure>>,
        describe: impl FnOnce(&T) -> String,
    ) -> Result<T, JobFailure> {
        self.event(name, StepStatus::Started, "", 0, Vec::new());
        let started = Instant::now();
        let result = work.await;
        let elapsed = millis(started.elapsed());
        match &result {
            Ok(value) => self.event(
                name,
                StepStatus::Succeeded,
                describe(value),
                elapsed,
                Vec::new(),
            ),
            Err(failure) => self.failed(name, failure, elapsed),
        }
        result
    }

    /// Sends the job's result, and closes its span with the outcome and the
    /// SQLSTATE the job stopped at.
    pub fn finish(&self, finished: Finished) {
        let Finished {
            mut result,
            sqlstate,
        } = finished;
        result.job_id = self.job.id.clone();
        result.attempt = self.job.attempt;
        result.seq = self.next_seq();
        result.duration_ms = millis(self.started.elapsed());
        // Each routine's own time, measured where it was spent (its CREATE,
        // its smoke calls); a routine timed by its job kind keeps that.
        for outcome in &mut result.routines {
            if outcome.duration_us == 0 {
                outcome.duration_us = self.routine_time_us(&outcome.identity);
            }
            if outcome.duration_ms == 0 {
                outcome.duration_ms = outcome.duration_us / 1000;
            }
        }
        self.spans.finish(result.outcome(), sqlstate.as_ref());
        crate::telemetry::count_job(self.job.kind.name(), result.outcome());
        // Most of a large batch's result is existence-only smoke reports:
        // sent compact, the controller rebuilds them (issue 15 item 9).
        if crate::link::capabilities::controller_expands_existence_only() {
            pgrollout_shared::smoke_compact::compact(&mut result);
        }
        tracing::info!(
            job_id = %self.job.id,
            outcome = ?result.outcome(),
            duration_ms = result.duration_ms,
            "job finished"
        );
        self.outbox.push(AgentMessage {
            body: Some(Body::Result(result)),
        });
    }
}

impl JobContext {
    /// A context whose events continue after sequence number `last_seq`
    /// (0 for a new job; the journal's last for a resumed one).
    pub fn new(
        job: Job,
        target: TargetConfig,
        last_seq: u64,
        config: Arc<AgentConfig>,
        outbox: Arc<Outbox>,
    ) -> JobContext {
        let spans = spans::JobSpans::start(&job, &target);
        JobContext {
            spans,
            target,
            config,
            outbox,
            seq: AtomicU64::new(last_seq),
            last_progress: std::sync::Mutex::new(None),
            routine_times: std::sync::Mutex::new(std::collections::HashMap::new()),
            started: Instant::now(),
            fence: fence::Fence::default(),
            early_connection: Default::default(),
            job,
        }
    }
}

impl JobContext {
    /// Gives the job the connection its link started opening for it.
    pub fn with_early_connection(self, early: EarlyConnection) -> JobContext {
        *self
            .early_connection
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = early;
        self
    }

    /// The connection opened early for this job, once (after that, and
    /// when there was none, an empty one).
    pub fn take_early_connection(&self) -> EarlyConnection {
        std::mem::take(
            &mut *self
                .early_connection
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// The job's span, for instrumenting its work.
    pub fn job_span(&self) -> &tracing::Span {
        self.spans.job()
    }
}

/// What a job kind hands back: the report for the controller (the wire
/// `JobResult`, which has no field for it) and, when the job stopped on a
/// database error, that error's SQLSTATE for the job's span.
#[derive(Debug, Default)]
pub struct Finished {
    pub result: JobResult,
    pub sqlstate: Option<SqlState>,
}

/// A report with no database error behind it (a success, a refusal in the
/// agent's own words, a deadline).
impl From<JobResult> for Finished {
    fn from(result: JobResult) -> Self {
        Finished {
            result,
            sqlstate: None,
        }
    }
}

/// A result for a job that failed at `failure`: where the failure is
/// logged, once, with its whole chain and SQLSTATE.
pub fn failed_result(failure: JobFailure, smoke: Vec<SmokeReport>) -> Finished {
    failure.log();
    Finished {
        sqlstate: failure.sql_state().cloned(),
        result: JobResult {
            outcome: failure.outcome as i32,
            message: failure.message(),
            smoke,
            ..Default::default()
        },
    }
}
