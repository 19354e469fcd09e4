//! What an agent tells the controller, checked once where it arrives
//! (`api/agent_link.rs`): its Hello, and every message after it. The engine
//! and the store see these types, never the wire's `AgentMessage`.
//!
//! A message that fails its check is a [`MalformedReport`]: it names the
//! field and carries what the agent sent as the report's key, because an
//! event or a result the controller does not acknowledge stays in the agent's
//! durable outbox and comes back on every reconnect. The link acknowledges
//! it, audits it and settles its job (`agent.malformed_report`).

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{self, agent_message::Body, AgentMessage};

use super::result_payload::ResultPayload;

/// Longest job id a report may name; the controller's own are ~20 bytes.
const MAX_JOB_ID_BYTES: usize = 128;
/// Longest agent name, zone or target name a Hello may carry.
const MAX_NAME_BYTES: usize = 256;

/// One attempt of a job, as a report names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub id: String,
    /// Starts at 1; a retry is the next attempt of the same id.
    pub attempt: u32,
}

/// The key the agent's outbox keeps a report under: what the acknowledgement
/// must name, exactly as the agent sent it, well-formed or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxKey {
    pub job_id: String,
    pub attempt: u32,
    pub seq: u64,
}

/// A message of an agent that failed its check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} (field {field}: {reason})")]
pub struct MalformedReport {
    /// Which message: `event`, `result`, `accept`, `decline`, `Hello`.
    pub what: &'static str,
    pub field: String,
    pub reason: String,
    /// Set for an event or a result: acknowledge it so the agent forgets it.
    pub outbox_key: Option<OutboxKey>,
    /// The job it is about, when its id and attempt themselves were sound
    /// (boxed: the error travels in every conversion's `Result`).
    pub job: Option<Box<JobRef>>,
}

/// A step's state in an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Started,
    Succeeded,
    Failed,
    Skipped,
}

/// How a job ended, as its agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Refused before anything changed.
    ValidationFailed,
    /// Failed while it ran; the transaction was rolled back.
    DeployFailed,
    /// A smoke test failed; the change was rolled back.
    SmokeFailed,
}

/// One event of a job, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedEvent {
    pub job: JobRef,
    /// Per attempt, from 1, without gaps.
    pub seq: u64,
    pub step: String,
    pub status: StepStatus,
    pub message: String,
    pub duration_ms: u64,
    pub at_unix_ms: i64,
    pub smoke: Vec<proto::SmokeReport>,
    /// Progress of a multi-routine step: routines done of total.
    pub done: u32,
    pub total: u32,
}

/// A job's result, checked: who it is for, its place in the job's sequence
/// and its outcome are typed, and so is everything the controller reads of
/// it (`payload`: the text, the backup, the ledger rows, the versions, the
/// probes). The whole report is also kept as the agent wrote it, for the
/// two places that pass it on without reading it: the store's result blob
/// and the operator's stream (and a watch sample's waiting reply).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedResult {
    pub job: JobRef,
    pub seq: u64,
    pub outcome: Outcome,
    pub payload: ResultPayload,
    report: proto::JobResult,
}

/// An agent's Hello, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentHello {
    pub name: String,
    pub version: String,
    /// What the agent says; the certificate decides (`auth`).
    pub claimed_zone: String,
    pub targets: Vec<AgentTarget>,
    /// Jobs the agent runs, or finished without an acknowledgement.
    pub in_flight: Vec<InFlightJob>,
    pub draining: bool,
}

/// A database target an agent serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentTarget {
    pub name: String,
    pub dbname: String,
    /// Issue 24: what a fleet environment's `labels` selector matches.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A job an agent's Hello lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlightJob {
    pub job: JobRef,
    pub last_seq: u64,
    pub finished: bool,
}

/// Any message after the Hello, checked.
#[derive(Debug)]
pub enum AgentReport {
    Accepted(JobRef),
    Declined {
        job: JobRef,
        reason: String,
    },
    Event(ReportedEvent),
    /// Boxed: a result is far larger than the other reports.
    Result(Box<ReportedResult>),
    /// Encoded OTLP spans to relay; the relay checks them (`telemetry/relay.rs`).
    Spans(proto::SpanBatch),
    Draining {
        running: u32,
    },
    Heartbeat,
    /// A second Hello on one stream: ignored.
    Hello,
    /// A message with no body.
    Empty,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from_outcome(self.into())
    }

    /// The lower-case name the audit log uses.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::ValidationFailed => "validationfailed",
            Outcome::DeployFailed => "deployfailed",
            Outcome::SmokeFailed => "smokefailed",
        }
    }
}

impl ReportedResult {
    /// The result as the agent wrote it: only stored (the job's blob) or
    /// relayed (the operator's stream, a watch sample's reply) as a whole.
    pub fn wire(&self) -> &proto::JobResult {
        &self.report
    }

    /// As [`ReportedResult::wire`], for the operator's stream.
    pub fn into_wire(self) -> proto::JobResult {
        self.report
    }

    /// A fixture's result as the link would record it (its sequence number
    /// 1 when it has none).
    #[cfg(test)]
    pub fn checked(mut wire: proto::JobResult) -> ReportedResult {
        wire.seq = wire.seq.max(1);
        ReportedResult::try_from(wire).expect("a sound result")
    }
}

fn malformed(what: &'static str, field: &str, reason: impl Into<String>) -> MalformedReport {
    MalformedReport {
        what,
        field: field.to_owned(),
        reason: reason.into(),
        outbox_key: None,
        job: None,
    }
}

fn job_ref(what: &'static str, id: &str, attempt: u32) -> Result<JobRef, MalformedReport> {
    if id.is_empty()
        || id.len() > MAX_JOB_ID_BYTES
        || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(malformed(
            what,
            "job_id",
            format!("must be 1 to {MAX_JOB_ID_BYTES} bytes without spaces"),
        ));
    }
    if attempt == 0 {
        return Err(malformed(what, "attempt", "must be 1 or more"));
    }
    Ok(JobRef {
        id: id.to_owned(),
        attempt,
    })
}

/// Checks a report kept in the agent's outbox: its job, its sequence number,
/// then `rest`; a failure carries the key to acknowledge.
fn outboxed<T>(
    what: &'static str,
    key: OutboxKey,
    rest: impl FnOnce(JobRef) -> Result<T, MalformedReport>,
) -> Result<T, MalformedReport> {
    let checked = job_ref(what, &key.job_id, key.attempt).and_then(|job| {
        if key.seq == 0 {
            return Err(MalformedReport {
                job: Some(Box::new(job)),
                ..malformed(what, "seq", "must be 1 or more")
            });
        }
        rest(job.clone()).map_err(|error| MalformedReport {
            job: Some(Box::new(job)),
            ..error
        })
    });
    checked.map_err(|error| MalformedReport {
        outbox_key: Some(key),
        ..error
    })
}

impl TryFrom<proto::JobEvent> for ReportedEvent {
    type Error = MalformedReport;

    fn try_from(event: proto::JobEvent) -> Result<Self, Self::Error> {
        let key = OutboxKey {
            job_id: event.job_id.clone(),
            attempt: event.attempt,
            seq: event.seq,
        };
        outboxed("event", key, |job| {
            let status = match proto::StepStatus::try_from(event.status) {
                Ok(proto::StepStatus::Started) => StepStatus::Started,
                Ok(proto::StepStatus::Succeeded) => StepStatus::Succeeded,
                Ok(proto::StepStatus::Failed) => StepStatus::Failed,
                Ok(proto::StepStatus::Skipped) => StepStatus::Skipped,
                Ok(proto::StepStatus::Unspecified) | Err(_) => {
                    return Err(malformed(
                        "event",
                        "status",
                        format!("{} is not a step status", event.status),
                    ))
                }
            };
            Ok(ReportedEvent {
                job,
                seq: event.seq,
                step: event.step,
                status,
                message: event.message,
                duration_ms: event.duration_ms,
                at_unix_ms: event.at_unix_ms,
                smoke: event.smoke,
                done: event.done,
                total: event.total,
            })
        })
    }
}

impl TryFrom<proto::JobResult> for ReportedResult {
    type Error = MalformedReport;

    fn try_from(report: proto::JobResult) -> Result<Self, Self::Error> {
        let key = OutboxKey {
            job_id: report.job_id.clone(),
            attempt: report.attempt,
            seq: report.seq,
        };
        outboxed("result", key, |job| {
            let outcome = match proto::Outcome::try_from(report.outcome) {
                Ok(proto::Outcome::Succeeded) => Outcome::Succeeded,
                Ok(proto::Outcome::ValidationFailed) => Outcome::ValidationFailed,
                Ok(proto::Outcome::DeployFailed) => Outcome::DeployFailed,
                Ok(proto::Outcome::SmokeFailed) => Outcome::SmokeFailed,
                Ok(proto::Outcome::Unspecified) | Err(_) => {
                    return Err(malformed(
                        "result",
                        "outcome",
                        format!("{} is not an outcome", report.outcome),
                    ))
                }
            };
            // Compact existence-only smoke reports back in place: past this
            // point every reader sees the whole list, as the agent made it.
            let mut report = report;
            pgrollout_shared::smoke_compact::expand(&mut report)
                .map_err(|why| malformed("result", "existence_only", why))?;
            Ok(ReportedResult {
                job,
                seq: report.seq,
                outcome,
                payload: ResultPayload::from(&report),
                report,
            })
        })
    }
}

fn name(what: &'static str, field: &str, value: &str) -> Result<(), MalformedReport> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(malformed(
            what,
            field,
            format!("must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

impl TryFrom<proto::Hello> for AgentHello {
    type Error = MalformedReport;

    fn try_from(hello: proto::Hello) -> Result<Self, Self::Error> {
        name("Hello", "agent_name", &hello.agent_name)?;
        name("Hello", "claimed_zone", &hello.claimed_zone)?;
        let targets = hello
            .targets
            .into_iter()
            .enumerate()
            .map(|(index, target)| {
                name("Hello", &format!("targets[{index}].name"), &target.name)?;
                Ok(AgentTarget {
                    name: target.name,
                    dbname: target.dbname,
                    labels: target.labels.into_iter().collect(),
                })
            })
            .collect::<Result<_, MalformedReport>>()?;
        let in_flight = hello
            .in_flight
            .into_iter()
            .enumerate()
            .map(|(index, job)| {
                let checked = job_ref("Hello", &job.job_id, job.attempt).map_err(|error| {
                    MalformedReport {
                        field: format!("in_flight[{index}].{}", error.field),
                        ..error
                    }
                })?;
                Ok(InFlightJob {
                    job: checked,
                    last_seq: job.last_seq,
                    finished: job.finished,
                })
            })
            .collect::<Result<_, MalformedReport>>()?;
        Ok(AgentHello {
            name: hello.agent_name,
            version: hello.agent_version,
            claimed_zone: hello.claimed_zone,
            targets,
            in_flight,
            draining: hello.draining,
        })
    }
}

impl TryFrom<AgentMessage> for AgentReport {
    type Error = MalformedReport;

    fn try_from(message: AgentMessage) -> Result<Self, Self::Error> {
        Ok(match message.body {
            Some(Body::Accept(accept)) => {
                AgentReport::Accepted(job_ref("accept", &accept.job_id, accept.attempt)?)
            }
            Some(Body::Decline(decline)) => AgentReport::Declined {
                job: job_ref("decline", &decline.job_id, decline.attempt)?,
                reason: decline.reason,
            },
            Some(Body::Event(event)) => AgentReport::Event(event.try_into()?),
            Some(Body::Result(result)) => AgentReport::Result(Box::new(result.try_into()?)),
            Some(Body::Spans(batch)) => AgentReport::Spans(batch),
            Some(Body::Draining(draining)) => AgentReport::Draining {
                running: draining.running,
            },
            Some(Body::Heartbeat(_)) => AgentReport::Heartbeat,
            Some(Body::Hello(_)) => AgentReport::Hello,
            // Handled before this conversion (`api/agent_link.rs`).
            Some(Body::RefusedJob(_)) | None => AgentReport::Empty,
        })
    }
}

impl From<StepStatus> for proto::StepStatus {
    fn from(status: StepStatus) -> Self {
        match status {
            StepStatus::Started => proto::StepStatus::Started,
            StepStatus::Succeeded => proto::StepStatus::Succeeded,
            StepStatus::Failed => proto::StepStatus::Failed,
            StepStatus::Skipped => proto::StepStatus::Skipped,
        }
    }
}

impl From<Outcome> for proto::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => proto::Outcome::Succeeded,
            Outcome::ValidationFailed => proto::Outcome::ValidationFailed,
            Outcome::DeployFailed => proto::Outcome::DeployFailed,
            Outcome::SmokeFailed => proto::Outcome::SmokeFailed,
        }
    }
}

/// The event as the operator's stream carries it.
impl From<ReportedEvent> for proto::JobEvent {
    fn from(event: ReportedEvent) -> Self {
        proto::JobEvent {
            job_id: event.job.id,
            attempt: event.job.attempt,
            seq: event.seq,
            step: event.step,
            status: proto::StepStatus::from(event.status) as i32,
            message: event.message,
            duration_ms: event.duration_ms,
            at_unix_ms: event.at_unix_ms,
            smoke: event.smoke,
            done: event.done,
            total: event.total,
        }
    }
}

impl From<&AgentTarget> for proto::TargetInfo {
    fn from(target: &AgentTarget) -> Self {
        proto::TargetInfo {
            name: target.name.clone(),
            dbname: target.dbname.clone(),
            labels: target.labels.clone().into_iter().collect(),
        }
    }
}

#[cfg(test)]
#[path = "agent_report_tests.rs"]
mod tests;
