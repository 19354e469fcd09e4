//! Job execution: one file per job kind, plus what they share — the context
//! that numbers and streams step events, and the failure type that carries
//! the outcome (and so the operator's exit code).

mod deploy;
mod restore;
mod smoke;
pub mod smoke_runner;

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
}

/// What a running job needs: its identity, its target, and the event stream.
pub struct JobContext {
    pub job: Job,
    pub target: TargetConfig,
    pub config: Arc<AgentConfig>,
    outbox: Arc<Outbox>,
    seq: AtomicU64,
    started: Instant,
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
        let event = JobEvent {
            job_id: self.job.id.clone(),
            attempt: self.job.attempt,
            seq: self.next_seq(),
            step: step.to_owned(),
            status: status as i32,
            message: message.into(),
            duration_ms,
            at_unix_ms: now_unix_ms(),
            smoke,
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

/// Runs a validated job to its result, bounded by its deadline. Dropping the
/// work at the deadline drops its database connection, which rolls back any
/// open transaction.
pub async fn execute(job: Job, config: Arc<AgentConfig>, outbox: Arc<Outbox>) {
    let Some(target) = config.target(&job.target).cloned() else {
        // The link checks this before accepting; kept for safety.
        return;
    };
    outbox.job_started(&job.id, job.attempt);
    let context = JobContext {
        target,
        config,
        outbox: outbox.clone(),
        seq: AtomicU64::new(0),
        started: Instant::now(),
        job,
    };
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
            JobKind::Deploy { routines } => deploy::run(&context, routines).await,
            JobKind::Smoke { routines } => smoke::run(&context, routines).await,
        }
    };
    let result = match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => JobResult {
            outcome: Outcome::DeployFailed as i32,
            message: format!(
                "job deadline reached after {:.1}s; the open transaction was rolled back",
                budget.as_secs_f64()
            ),
            ..Default::default()
        },
    };
    context.finish(result);
    outbox.job_finished(&context.job.id, context.job.attempt);
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
