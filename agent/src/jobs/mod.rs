//! Job execution: one file per job kind, plus what they share — the context
//! that numbers and streams step events, and the failure type that carries
//! the outcome (and so the operator's exit code).

mod after_deploy;
mod apply;
mod audit_anchors;
mod check;
mod deploy;
mod deploy_each;
mod disable;
mod escaped;
mod fence;
mod history;
mod perf_probe;
mod pgtap;
mod preopen;
mod replace;
mod resolve;
mod restore;
mod retire;
mod rollback;
mod rollback_apply;
mod rollback_plan;
mod rollback_sources;
mod rollback_verify;
mod session;
mod smoke;
mod smoke_pipeline;
pub mod smoke_runner;
mod spans;
pub mod txn_seal;
mod unchanged;
mod versions;
mod watch_sample;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pgrollout_shared::job::{now_unix_ms, Job, JobKind};
use pgrollout_shared::proto::{
    agent_message::Body, AgentMessage, JobEvent, JobResult, Outcome, SmokeReport, StepStatus,
};

use crate::config::{AgentConfig, TargetConfig};
use crate::link::Outbox;
use smoke_runner::millis;
use tracing::Instrument;

/// Why a job stopped, and which outcome (exit code) that means.
#[derive(Debug)]
pub struct JobFailure {
    pub outcome: Outcome,
    pub message: String,
}

impl JobFailure {
    pub fn deploy(message: impl Into<String>) -> Self {
        JobFailure {
            outcome: Outcome::DeployFailed,
            message: message.into(),
        }
    }

    /// A connection that failed. A server outside the supported versions is
    /// a refusal (exit 1): nothing was tried, and retrying will not help.
    pub fn connect(error: crate::sql::ConnectError) -> Self {
        let outcome = match error {
            crate::sql::ConnectError::Unsupported { .. } => Outcome::ValidationFailed,
            _ => Outcome::DeployFailed,
        };
        JobFailure {
            outcome,
            message: pgrollout_shared::errors::error_chain(&error),
        }
    }
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
}

impl JobContext {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Streams one event (kept in the outbox until acknowledged).
    pub fn event(
        &self,
        step: &str,
        status: StepStatus,
        message: impl Into<String>,
        duration_ms: u64,
        smoke: Vec<SmokeReport>,
    ) {
        let message = message.into();
        self.spans
            .step_event(step, status, duration_ms, &message, &smoke);
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
            Err(failure) => self.event(
                name,
                StepStatus::Failed,
                &failure.message,
                elapsed,
                Vec::new(),
            ),
        }
        result
    }

    fn finish(&self, mut result: JobResult) {
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
        self.spans.finish(result.outcome(), &result.message);
        crate::telemetry::count_job(self.job.kind.name(), result.outcome());
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

pub use resolve::resolve_interrupted;

impl JobContext {
    /// A context whose events continue after sequence number `last_seq`
    /// (0 for a new job; the journal's last for a resumed one).
    fn new(
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
            job,
        }
    }
}

/// Runs a validated job to its result, bounded by its deadline and fenced by
/// its lease. Dropping the work at either drops its database connection,
/// which rolls back any open transaction.
pub async fn execute(job: Job, last_seq: u64, config: Arc<AgentConfig>, outbox: Arc<Outbox>) {
    let Some(target) = config.target(&job.target).cloned() else {
        // The link checks this before accepting; kept for safety.
        outbox.job_finished(&job.id, job.attempt);
        return;
    };
    let context = JobContext::new(job, target, last_seq, config, outbox.clone());
    tracing::info!(
        job_id = %context.job.id,
        kind = context.job.kind.name(),
        target = %context.target.name,
        trace_id = %context.job.trace.trace_id,
        "job started"
    );
    let budget = context
        .job
        .deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let work = async {
        match &context.job.kind {
            JobKind::Deploy { routines, batch } => {
                let mut result = deploy::run(&context, routines, batch).await;
                after_deploy::run(&context, routines, batch, &mut result).await;
                result
            }
            JobKind::Smoke { routines } => smoke::run(&context, routines).await,
            JobKind::Rollback(spec) => rollback::run(&context, spec).await,
            JobKind::Disable(spec) => disable::run(&context, spec).await,
            JobKind::Enable(selector) => disable::enable(&context, selector).await,
            JobKind::History(selector) => history::run(&context, selector).await,
            JobKind::WatchSample(spec) => watch_sample::run(&context, spec).await,
            JobKind::Check { routines } => check::run(&context, routines).await,
            JobKind::PerfProbe { routines, targets } => {
                perf_probe::run(&context, routines, targets).await
            }
            JobKind::AuditAnchors => audit_anchors::run(&context).await,
        }
    };
    let work = work.instrument(context.spans.job().clone());
    let result = tokio::select! {
        finished = tokio::time::timeout(budget, work) => match finished {
            Ok(result) => result,
            Err(_) => {
                context.cancel_queries().await;
                JobResult {
                outcome: Outcome::DeployFailed as i32,
                message: format!(
                    "job deadline reached after {:.1}s; the open transaction was rolled back",
                    budget.as_secs_f64()
                ),
                ..Default::default()
            }},
        },
        silent = context.fenced() => {
            tracing::warn!(job_id = %context.job.id, silent_ms = silent.as_millis() as u64, "job fenced: lease expired");
            context.cancel_queries().await;
            JobResult {
                outcome: Outcome::DeployFailed as i32,
                message: context.fenced_message(silent),
                ..Default::default()
            }
        }
    };
    if matches!(context.job.kind, JobKind::Deploy { .. })
        && result.outcome() == Outcome::Succeeded
        && !result.backup_path.is_empty()
    {
        apply_retention(&context, &result.backup_path).await;
    }
    context.finish(result);
    outbox.job_finished(&context.job.id, context.job.attempt);
    // The job span ends here; export the job's spans now rather than at the
    // exporter's next tick, so the rollout's trace is complete moments after
    // its result.
    drop(context);
    pgrollout_shared::telemetry::flush_soon();
}

/// Prunes the target's expired backups after a successful deploy; a problem
/// here is reported as a failed step but never changes the deploy's outcome.
async fn apply_retention(context: &JobContext, new_backup: &str) {
    let days = context.job.backup_retention_days;
    if days == 0 {
        return;
    }
    let keep = std::path::PathBuf::from(new_backup);
    let Some(dir) = keep.parent().map(std::path::Path::to_path_buf) else {
        return;
    };
    let started = Instant::now();
    let pruned = tokio::task::spawn_blocking(move || {
        crate::backup::retention::prune(&dir, days, &keep, SystemTime::now())
    })
    .await;
    let elapsed = millis(started.elapsed());
    match pruned {
        Ok(Ok(removed)) => context.event(
            "retention",
            StepStatus::Succeeded,
            format!("{removed} backup(s) older than {days} day(s) removed"),
            elapsed,
            Vec::new(),
        ),
        Ok(Err(error)) => context.event(
            "retention",
            StepStatus::Failed,
            format!("backups not pruned: {error}"),
            elapsed,
            Vec::new(),
        ),
        Err(error) => context.event(
            "retention",
            StepStatus::Failed,
            format!("backups not pruned: {error}"),
            elapsed,
            Vec::new(),
        ),
    }
}

/// A result for a job that failed at `failure`.
fn failed_result(failure: JobFailure, smoke: Vec<SmokeReport>) -> JobResult {
    JobResult {
        outcome: failure.outcome as i32,
        message: failure.message,
        smoke,
        ..Default::default()
    }
}
