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
    let mut requester_only = false;
    let (kind, subject, emergency) = match &job.kind {
        JobKind::Deploy { routines, .. } => match recomputed(job, routines) {
            Ok(computed) => (action::DEPLOY, computed, false),
            Err(refusal) => return Verdict::Refused(refusal),
        },
        // They run the plan's SQL in a transaction that is rolled back: the
        // content must be the plan its requester signed (README, Trust model).
        JobKind::Check { routines } | JobKind::PerfProbe { routines, .. } => {
            requester_only = true;
            match recomputed(job, routines) {
                Ok(computed) => (action::DEPLOY, computed, false),
                Err(refusal) => return Verdict::Refused(refusal),
            }
        }
        // Rollback, disable, enable, adopt: the subject is what the job's
        // own spec does (the routines, the version restored, the reason).
        JobKind::Rollback(_) | JobKind::Disable(_) | JobKind::Enable(_) | JobKind::Adopt(_) => {
            let Some((kind, subject)) = subject::of_operation(&job.kind) else {
                return Verdict::Refused(Refusal("an operation without a subject".into()));
            };
            (kind, subject, kind == action::EMERGENCY_ROLLBACK)
        }
        // Smoke tests and watch probes: no signature of their own, but the
        // job itself checks, with the policy on, that they are the smoke
        // tests of the plan in force on the target (`jobs/deployed_sql.rs`).
        // The rest only read.
        JobKind::Smoke { .. }
        | JobKind::History(_)
        | JobKind::WatchSample(_)
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
        requester_only,
    };
    match verify::verify(policy, &claims, &job.approvals.signatures, now) {
        Ok(approved) => Verdict::Approved(approved),
        Err(refusal) => Verdict::Refused(refusal),
    }
}

/// The plan id the routines hash to, when it is the one the job names.
fn recomputed(
    job: &Job,
    routines: &[pgrollout_shared::routine::Routine],
) -> Result<String, Refusal> {
    let computed = pgrollout_shared::plan_id::plan_id_of_job(routines);
    if computed != job.plan_id {
        return Err(Refusal(format!(
            "the job's routines hash to plan {computed}, not to the plan {} it names: its content was changed",
            job.plan_id
        )));
    }
    Ok(computed)
}

/// Whether a signed job of this kind changes the target, so that its
/// request may run there only once (`signing::replay`); a check or a perf
/// probe of the plan, rolled back, does not use the request up.
pub fn runs_once(kind: &JobKind) -> bool {
    !matches!(kind, JobKind::Check { .. } | JobKind::PerfProbe { .. })
}
