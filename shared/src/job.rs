//! The unit of work an agent executes, validated from a `JobOffer`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proto;
use crate::routine::{routines_from_wire, InvalidField, Routine};
use crate::traceparent::TraceParent;

/// A job as the agent runs it: identity, context and what to do.
#[derive(Clone, Debug)]
pub struct Job {
    /// With `attempt`, the idempotency key: the ledger records it.
    pub id: String,
    pub attempt: u32,
    /// After this the agent stops and the transaction rolls back.
    pub deadline: SystemTime,
    pub trace: TraceParent,
    /// Name of the database target within the agent's zone.
    pub target: String,
    pub rollout_id: String,
    pub plan_id: String,
    /// Who asked for the rollout, as the controller authenticated them.
    pub actor: String,
    pub commit_sha: String,
    /// The operator's procedure argument, for file names and reports.
    pub label: String,
    pub kind: JobKind,
}

/// What a job does.
#[derive(Clone, Debug)]
pub enum JobKind {
    /// Back up, apply, grant, record, smoke-test, commit (DESIGN §5).
    Deploy { routines: Vec<Routine> },
    /// Smoke-test the live definitions; change nothing.
    Smoke { routines: Vec<Routine> },
}

impl JobKind {
    /// A short name for logs and the store.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Deploy { .. } => "deploy",
            JobKind::Smoke { .. } => "smoke",
        }
    }

    /// The routines the job touches or tests.
    pub fn routines(&self) -> &[Routine] {
        match self {
            JobKind::Deploy { routines } | JobKind::Smoke { routines } => routines,
        }
    }
}

fn required(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.trim().is_empty() || value.len() > 256 {
        return Err(InvalidField {
            field: field.into(),
            reason: "must be 1 to 256 bytes".into(),
        });
    }
    Ok(())
}

impl TryFrom<proto::JobOffer> for Job {
    type Error = InvalidField;

    fn try_from(offer: proto::JobOffer) -> Result<Self, Self::Error> {
        required("job_id", &offer.job_id)?;
        required("target", &offer.target)?;
        required("rollout_id", &offer.rollout_id)?;
        required("plan_id", &offer.plan_id)?;
        required("actor", &offer.actor)?;
        if offer.attempt == 0 {
            return Err(InvalidField {
                field: "attempt".into(),
                reason: "attempts count from 1".into(),
            });
        }
        let trace = TraceParent::parse(&offer.traceparent).ok_or_else(|| InvalidField {
            field: "traceparent".into(),
            reason: "not a W3C traceparent".into(),
        })?;
        let deadline_ms = u64::try_from(offer.deadline_unix_ms).map_err(|_| InvalidField {
            field: "deadline_unix_ms".into(),
            reason: "negative".into(),
        })?;
        let (kind, label) = match offer.kind {
            Some(proto::job_offer::Kind::Deploy(deploy)) => (
                JobKind::Deploy {
                    routines: routines_from_wire(deploy.routines)?,
                },
                deploy.label,
            ),
            Some(proto::job_offer::Kind::Smoke(smoke)) => (
                JobKind::Smoke {
                    routines: routines_from_wire(smoke.routines)?,
                },
                smoke.label,
            ),
            None => {
                return Err(InvalidField {
                    field: "kind".into(),
                    reason: "a job offer must say what to do".into(),
                })
            }
        };
        Ok(Job {
            id: offer.job_id,
            attempt: offer.attempt,
            deadline: UNIX_EPOCH + Duration::from_millis(deadline_ms),
            trace,
            target: offer.target,
            rollout_id: offer.rollout_id,
            plan_id: offer.plan_id,
            actor: offer.actor,
            commit_sha: offer.commit_sha,
            label,
            kind,
        })
    }
}

impl From<Job> for proto::JobOffer {
    fn from(job: Job) -> Self {
        let routines = |r: Vec<Routine>| r.into_iter().map(Into::into).collect();
        let kind = match job.kind {
            JobKind::Deploy { routines: r } => proto::job_offer::Kind::Deploy(proto::DeployJob {
                routines: routines(r),
                label: job.label,
            }),
            JobKind::Smoke { routines: r } => proto::job_offer::Kind::Smoke(proto::SmokeJob {
                routines: routines(r),
                label: job.label,
            }),
        };
        proto::JobOffer {
            job_id: job.id,
            attempt: job.attempt,
            deadline_unix_ms: unix_ms(job.deadline),
            traceparent: job.trace.to_string(),
            target: job.target,
            rollout_id: job.rollout_id,
            plan_id: job.plan_id,
            actor: job.actor,
            commit_sha: job.commit_sha,
            kind: Some(kind),
        }
    }
}

/// Milliseconds since the Unix epoch, as the wire carries times.
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in wire milliseconds.
pub fn now_unix_ms() -> i64 {
    unix_ms(SystemTime::now())
}
