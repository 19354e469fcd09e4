//! Signed approvals at the point of execution (issue 19): before a job that
//! changes a database runs, an agent with an `[approvals]` policy recomputes
//! what the job would do (the plan id from the routines it carries; for an
//! operation, its subject) and verifies the operators' signed statements
//! against its own policy. The controller only forwards the statements: a
//! controller, or its store, that forges, strips, replays or alters them is
//! refused here, inside the zone, before any connection to the database.

use std::time::SystemTime;

use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::signing::policy::ApprovalPolicy;
use pgrollout_shared::signing::verify::{self, Approved, Claims, Refusal};
use pgrollout_shared::signing::{action, subject};

/// What the check decided for one job.
pub enum Verdict {
    /// No policy, or a job that changes nothing: runs as before.
    NotRequired,
    /// Signed as the policy requires.
    Approved(Approved),
    Refused(Refusal),
}

/// Checks `job` against `policy` for this agent's `zone`.
pub fn check(policy: Option<&ApprovalPolicy>, zone: &str, job: &Job, now: SystemTime) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::NotRequired;
    };
    let (kind, subject, emergency) = match &job.kind {
        JobKind::Deploy { routines, .. } => {
            let computed = pgrollout_shared::plan_id::plan_id_of_job(routines);
            if computed != job.plan_id {
                return Verdict::Refused(Refusal(format!(
                    "the job's routines hash to plan {computed}, not to the plan {} it names: its content was changed",
                    job.plan_id
                )));
            }
            (action::DEPLOY, computed, false)
        }
        // Rollback, disable, enable, adopt: the subject is what the job's
        // own spec does (the routines, the version restored, the reason).
        JobKind::Rollback(_) | JobKind::Disable(_) | JobKind::Enable(_) | JobKind::Adopt(_) => {
            let Some((kind, subject)) = subject::of_operation(&job.kind) else {
                return Verdict::Refused(Refusal("an operation without a subject".into()));
            };
            (kind, subject, kind == action::EMERGENCY_ROLLBACK)
        }
        // Read-only, or run in a transaction that is always rolled back:
        // not verified (README, Trust model, says what that leaves open).
        JobKind::Smoke { .. }
        | JobKind::History(_)
        | JobKind::WatchSample(_)
        | JobKind::Check { .. }
        | JobKind::PerfProbe { .. }
        | JobKind::AuditAnchors
        | JobKind::Drift { .. } => return Verdict::NotRequired,
    };
    let claims = Claims {
        action: kind,
        subject: &subject,
        zone,
        target: &job.target,
        request_id: &job.approvals.request_id,
        emergency,
    };
    match verify::verify(policy, &claims, &job.approvals.signatures, now) {
        Ok(approved) => Verdict::Approved(approved),
        Err(refusal) => Verdict::Refused(refusal),
    }
}
