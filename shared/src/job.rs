//! The unit of work an agent executes, validated from a `JobOffer`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::audit_anchor::AuditHead;
use crate::operations::{
    selector_from_wire, DisableSpec, RollbackSpec, RoutineSelector, MAX_REASON_BYTES,
};
use crate::perf_target::{targets_from_wire, PerfTarget};
use crate::proto;
use crate::routine::{routines_from_wire, InvalidField, Routine};
use crate::signing::sources::{sources_from_wire, SourcePlan};
use crate::traceparent::TraceParent;
use crate::watch::WatchSampleSpec;

/// A job as the agent runs it: identity, context and what to do.
#[derive(Clone, Debug)]
pub struct Job {
    /// With `attempt`, the idempotency key: the ledger records it.
    pub id: String,
    pub attempt: u32,
    /// After this the agent stops and the transaction rolls back.
    pub deadline: SystemTime,
    /// How long the agent may go without hearing from the controller before
    /// it abandons work not yet committed (fencing); `None`: no lease.
    pub lease: Option<Duration>,
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
    /// Backups older than this many days are pruned after a successful
    /// deploy; 0 keeps them all.
    pub backup_retention_days: u32,
    /// The controller's audit head when the job was offered: written into
    /// every ledger row the job writes, as an anchor of the audit chain.
    pub audit_head: Option<AuditHead>,
    /// The operators' signed statements for this job (issue 19), verbatim.
    pub approvals: SignedApprovals,
    pub kind: JobKind,
}

/// What the operators signed for a job, as the controller forwarded it; only
/// an agent with an `[approvals]` policy reads it.
#[derive(Clone, Debug, Default)]
pub struct SignedApprovals {
    pub request_id: String,
    pub signatures: Vec<proto::SignedStatement>,
    /// A fleet's members (`zone/target`) when the statements were signed for
    /// a fleet (`signing::fleet`); empty for one target.
    pub fleet_members: Vec<String>,
    /// The fleet rollout a resumed deploy or a fleet's rollback belongs to.
    pub fleet_rollout: String,
}

/// What a job does.
#[derive(Clone, Debug)]
pub enum JobKind {
    /// Back up, apply, grant, record, smoke-test, commit (DESIGN §5).
    /// `routines` are in deploy order.
    Deploy {
        routines: Vec<Routine>,
        batch: BatchOptions,
    },
    /// Smoke-test the live definitions; change nothing. `sources`: the
    /// deployed plans the routines are taken from (issue 19; see
    /// `signing::sources`), empty where the controller sends a working copy's.
    Smoke {
        routines: Vec<Routine>,
        sources: Vec<SourcePlan>,
    },
    /// Restore earlier versions exactly, in one transaction (issue 6).
    Rollback(RollbackSpec),
    /// Rename or revoke EXECUTE, recorded in the ledger.
    Disable(DisableSpec),
    /// Undo the latest disable exactly, from the ledger.
    Enable(RoutineSelector),
    /// Read the ledger's versions; change nothing.
    History(RoutineSelector),
    /// A post-deploy watch's sample: statistics and probes; change nothing.
    WatchSample(WatchSampleSpec),
    /// Apply the routines in a transaction that is always rolled back, and
    /// run plpgsql_check where installed: the syntax gate's dry run.
    Check { routines: Vec<Routine> },
    /// Time each routine's `[perf]` probe on the old and the new definition,
    /// each set in a transaction that is rolled back; the old one is what
    /// each target runs, when targets are given.
    PerfProbe {
        routines: Vec<Routine>,
        targets: Vec<PerfTarget>,
    },
    /// Read the audit anchors the target's ledger holds; change nothing.
    AuditAnchors,
    /// Compare the live catalog with the ledger (issue 20); change nothing.
    /// The names limit the report (empty: every routine).
    Drift { names: Vec<String> },
    /// Record drifted routines' live state in the ledger (issue 20): the
    /// routines themselves are not touched.
    Adopt(AdoptSpec),
}

/// Which routines an adoption records, and why (issue 20).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptSpec {
    pub routines: Vec<RoutineSelector>,
    /// The operator's reason: required, at most `MAX_REASON_BYTES`.
    pub reason: String,
    /// Adopt only those that drifted (a deploy's `--adopt-drift`); else a
    /// selected routine that did not drift is refused.
    pub only_drifted: bool,
}

/// At most this many selectors in one adoption (a plan's routines).
pub const MAX_ADOPT_SELECTORS: usize = 1_000;

impl TryFrom<proto::AdoptJob> for AdoptSpec {
    type Error = InvalidField;

    fn try_from(wire: proto::AdoptJob) -> Result<Self, Self::Error> {
        let reason = wire.reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(InvalidField {
                field: "adopt.reason".into(),
                reason: format!("must be 1 to {MAX_REASON_BYTES} bytes"),
            });
        }
        if wire.routines.is_empty() || wire.routines.len() > MAX_ADOPT_SELECTORS {
            return Err(InvalidField {
                field: "adopt.routines".into(),
                reason: format!("must name 1 to {MAX_ADOPT_SELECTORS} routines"),
            });
        }
        Ok(AdoptSpec {
            routines: wire
                .routines
                .into_iter()
                .map(|r| selector_from_wire(Some(r)))
                .collect::<Result<_, _>>()?,
            reason: reason.to_owned(),
            only_drifted: wire.only_drifted,
        })
    }
}

/// How a multi-routine deploy treats failures, and what runs after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOptions {
    /// Each routine in its own transaction; a failure skips its dependants.
    /// Otherwise the whole job is one transaction.
    pub continue_on_error: bool,
    /// `(dependent, dependency)` pairs of indices into the routines.
    pub dependencies: Vec<(usize, usize)>,
    /// After a successful deploy, run the plan's pgTAP scripts (rolled back).
    /// Set by the controller from the environment (`run_pgtap`).
    pub run_pgtap: bool,
    /// After a successful deploy, run the plan's performance probes. Set by
    /// the controller from the environment (`run_perf_probe`).
    pub run_perf_probe: bool,
    /// Refuse to replace a routine whose live state is not what the ledger
    /// last recorded (issue 20). Set by the controller when the environment
    /// has the `no_drift` gate; the agent judges it against the live catalog.
    pub refuse_drift: bool,
    /// The environments promoted from here whose running versions the
    /// probes time as the old ones (set by the controller).
    pub perf_targets: Vec<PerfTarget>,
}

impl JobKind {
    /// A short name for logs and the store.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Deploy { .. } => "deploy",
            JobKind::Smoke { .. } => "smoke",
            JobKind::Rollback(_) => "rollback",
            JobKind::Disable(_) => "disable",
            JobKind::Enable(_) => "enable",
            JobKind::History(_) => "history",
            JobKind::WatchSample(_) => "watch_sample",
            JobKind::Check { .. } => "check",
            JobKind::PerfProbe { .. } => "perf_probe",
            JobKind::AuditAnchors => "audit_anchors",
            JobKind::Drift { .. } => "drift",
            JobKind::Adopt(_) => "adopt",
        }
    }

    /// The routines the job touches or tests.
    pub fn routines(&self) -> &[Routine] {
        match self {
            JobKind::Deploy { routines, .. }
            | JobKind::Smoke { routines, .. }
            | JobKind::Check { routines }
            | JobKind::PerfProbe { routines, .. } => routines,
            JobKind::WatchSample(spec) => &spec.probes,
            JobKind::Rollback(_)
            | JobKind::Disable(_)
            | JobKind::Enable(_)
            | JobKind::History(_)
            | JobKind::AuditAnchors
            | JobKind::Drift { .. }
            | JobKind::Adopt(_) => &[],
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
            Some(proto::job_offer::Kind::Deploy(deploy)) => {
                let routines = routines_from_wire(deploy.routines)?;
                let mut dependencies = Vec::with_capacity(deploy.dependencies.len());
                for (index, edge) in deploy.dependencies.iter().enumerate() {
                    let (dependent, dependency) =
                        (edge.dependent as usize, edge.dependency as usize);
                    if dependent >= routines.len()
                        || dependency >= routines.len()
                        || dependent == dependency
                    {
                        return Err(InvalidField {
                            field: format!("dependencies[{index}]"),
                            reason: "must name two different routines of the job".into(),
                        });
                    }
                    dependencies.push((dependent, dependency));
                }
                (
                    JobKind::Deploy {
                        routines,
                        batch: BatchOptions {
                            continue_on_error: deploy.continue_on_error,
                            dependencies,
                            run_pgtap: deploy.run_pgtap,
                            run_perf_probe: deploy.run_perf_probe,
                            refuse_drift: deploy.refuse_drift,
                            perf_targets: targets_from_wire(deploy.perf_targets)?,
                        },
                    },
                    deploy.label,
                )
            }
            Some(proto::job_offer::Kind::Smoke(smoke)) => (
                JobKind::Smoke {
                    routines: routines_from_wire(smoke.routines)?,
                    sources: sources_from_wire(smoke.source_plans)?,
                },
                smoke.label,
            ),
            Some(proto::job_offer::Kind::Rollback(rollback)) => {
                let label = rollback.label.clone();
                (JobKind::Rollback(rollback.try_into()?), label)
            }
            Some(proto::job_offer::Kind::Disable(disable)) => {
                let label = disable.label.clone();
                (JobKind::Disable(disable.try_into()?), label)
            }
            Some(proto::job_offer::Kind::Enable(enable)) => (
                JobKind::Enable(selector_from_wire(enable.routines)?),
                enable.label,
            ),
            Some(proto::job_offer::Kind::History(history)) => (
                JobKind::History(selector_from_wire(history.routines)?),
                history.label,
            ),
            Some(proto::job_offer::Kind::WatchSample(sample)) => {
                let label = sample.watch_id.clone();
                (JobKind::WatchSample(sample.try_into()?), label)
            }
            Some(proto::job_offer::Kind::Check(check)) => (
                JobKind::Check {
                    routines: routines_from_wire(check.routines)?,
                },
                check.label,
            ),
            Some(proto::job_offer::Kind::PerfProbe(probe)) => {
                let routines = routines_from_wire(probe.routines)?;
                if routines.iter().all(|r| r.perf_probe.is_none()) {
                    return Err(InvalidField {
                        field: "perf_probe.routines".into(),
                        reason: "no routine carries a [perf] probe".into(),
                    });
                }
                let targets = targets_from_wire(probe.perf_targets)?;
                (JobKind::PerfProbe { routines, targets }, probe.label)
            }
            Some(proto::job_offer::Kind::AuditAnchors(_)) => {
                (JobKind::AuditAnchors, "audit-anchors".to_owned())
            }
            Some(proto::job_offer::Kind::Drift(drift)) => {
                for name in &drift.names {
                    required("drift.names", name)?;
                }
                (JobKind::Drift { names: drift.names }, "drift".to_owned())
            }
            Some(proto::job_offer::Kind::Adopt(adopt)) => {
                let label = adopt.label.clone();
                (JobKind::Adopt(adopt.try_into()?), label)
            }
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
            lease: (offer.lease_ms > 0).then(|| Duration::from_millis(offer.lease_ms.into())),
            trace,
            target: offer.target,
            rollout_id: offer.rollout_id,
            plan_id: offer.plan_id,
            actor: offer.actor,
            commit_sha: offer.commit_sha,
            label,
            backup_retention_days: offer.backup_retention_days,
            audit_head: offer.audit_head.map(TryInto::try_into).transpose()?,
            approvals: SignedApprovals {
                request_id: offer.signed_request_id,
                signatures: offer.signatures,
                fleet_members: offer.fleet_members,
                fleet_rollout: offer.fleet_rollout,
            },
            kind,
        })
    }
}

impl From<Job> for proto::JobOffer {
    fn from(job: Job) -> Self {
        let routines = |r: Vec<Routine>| r.into_iter().map(Into::into).collect();
        let kind = match job.kind {
            JobKind::Deploy { routines: r, batch } => {
                proto::job_offer::Kind::Deploy(proto::DeployJob {
                    routines: routines(r),
                    label: job.label,
                    continue_on_error: batch.continue_on_error,
                    dependencies: batch
                        .dependencies
                        .iter()
                        .map(|&(dependent, dependency)| proto::DependencyEdge {
                            dependent: dependent as u32,
                            dependency: dependency as u32,
                        })
                        .collect(),
                    run_pgtap: batch.run_pgtap,
                    run_perf_probe: batch.run_perf_probe,
                    refuse_drift: batch.refuse_drift,
                    perf_targets: batch.perf_targets.into_iter().map(Into::into).collect(),
                })
            }
            JobKind::Check { routines: r } => proto::job_offer::Kind::Check(proto::CheckJob {
                routines: routines(r),
                label: job.label,
            }),
            JobKind::PerfProbe {
                routines: r,
                targets,
            } => proto::job_offer::Kind::PerfProbe(proto::PerfProbeJob {
                routines: routines(r),
                label: job.label,
                perf_targets: targets.into_iter().map(Into::into).collect(),
            }),
            JobKind::Smoke {
                routines: r,
                sources,
            } => proto::job_offer::Kind::Smoke(proto::SmokeJob {
                routines: routines(r),
                label: job.label,
                source_plans: sources.into_iter().map(Into::into).collect(),
            }),
            JobKind::Rollback(spec) => proto::job_offer::Kind::Rollback(spec.into_wire(job.label)),
            JobKind::Disable(spec) => proto::job_offer::Kind::Disable(proto::DisableJob {
                label: job.label,
                routines: Some(spec.routines.into()),
                revoke: spec.revoke,
            }),
            JobKind::Enable(selector) => proto::job_offer::Kind::Enable(proto::EnableJob {
                label: job.label,
                routines: Some(selector.into()),
            }),
            JobKind::History(selector) => proto::job_offer::Kind::History(proto::HistoryJob {
                label: job.label,
                routines: Some(selector.into()),
            }),
            JobKind::WatchSample(spec) => proto::job_offer::Kind::WatchSample(spec.into()),
            JobKind::AuditAnchors => {
                proto::job_offer::Kind::AuditAnchors(proto::AuditAnchorsJob {})
            }
            JobKind::Drift { names } => proto::job_offer::Kind::Drift(proto::DriftJob { names }),
            JobKind::Adopt(spec) => proto::job_offer::Kind::Adopt(proto::AdoptJob {
                label: job.label,
                routines: spec.routines.into_iter().map(Into::into).collect(),
                reason: spec.reason,
                only_drifted: spec.only_drifted,
            }),
        };
        proto::JobOffer {
            job_id: job.id,
            attempt: job.attempt,
            deadline_unix_ms: unix_ms(job.deadline),
            lease_ms: job.lease.map_or(0, |lease| {
                u32::try_from(lease.as_millis()).unwrap_or(u32::MAX)
            }),
            traceparent: job.trace.to_string(),
            target: job.target,
            rollout_id: job.rollout_id,
            plan_id: job.plan_id,
            actor: job.actor,
            commit_sha: job.commit_sha,
            backup_retention_days: job.backup_retention_days,
            audit_head: job.audit_head.map(Into::into),
            signatures: job.approvals.signatures,
            signed_request_id: job.approvals.request_id,
            fleet_members: job.approvals.fleet_members,
            fleet_rollout: job.approvals.fleet_rollout,
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
