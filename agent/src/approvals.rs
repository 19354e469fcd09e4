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
use pgrollout_shared::signing::{action, fleet, subject};

/// What the check decided for one job.
pub enum Verdict {
    /// No policy, or a job that changes nothing: runs as before.
    NotRequired,
    /// Signed as the policy requires; with the request id of the operator's
    /// signed `resume` when a fleet's deploy carries one.
    Approved(Approved, Option<String>),
    Refused(Refusal),
}

/// Checks `job` against `policy` for this agent's `zone`.
pub fn check(policy: Option<&ApprovalPolicy>, zone: &str, job: &Job, now: SystemTime) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::NotRequired;
    };
    let fleet_rollout = job.approvals.fleet_rollout.as_str();
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
        // own spec does (the routines, the version restored, the reason) —
        // for a fleet's rollback, what `rollback --rollout f-…` signed.
        JobKind::Rollback(_) | JobKind::Disable(_) | JobKind::Enable(_) | JobKind::Adopt(_) => {
            let of = if fleet_rollout.is_empty() {
                subject::of_operation(&job.kind)
            } else {
                subject::of_fleet_operation(&job.kind, fleet_rollout)
            };
            let Some((kind, subject)) = of else {
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
    let (signed_zone, signed_target) = match where_signed(zone, job) {
        Ok(place) => place,
        Err(refusal) => return Verdict::Refused(refusal),
    };
    // A fleet's deploy may carry, besides the deploy's statements, the
    // operator's `resume`: verified on its own terms below.
    let (resumes, statements): (Vec<_>, Vec<_>) = job
        .approvals
        .signatures
        .iter()
        .cloned()
        .partition(|signed| is_resume(signed) && matches!(job.kind, JobKind::Deploy { .. }));
    let claims = Claims {
        action: kind,
        subject: &subject,
        zone: &signed_zone,
        target: &signed_target,
        rule_target: &job.target,
        request_id: &job.approvals.request_id,
        emergency,
        requester_only,
    };
    let approved = match verify::verify(policy, &claims, &statements, now) {
        Ok(approved) => approved,
        Err(refusal) => return Verdict::Refused(refusal),
    };
    let resume = match resumes.first() {
        None => None,
        Some(_) if fleet_rollout.is_empty() || job.approvals.fleet_members.is_empty() => {
            return Verdict::Refused(Refusal(
                "a resume statement on a job that is not a fleet rollout's".into(),
            ))
        }
        Some(first) => {
            // Its own request id (chosen by the `resume` CLI) is what the
            // agent reserves, so one signed resume runs once per target.
            let request = pgrollout_shared::signing::Statement::decode(&first.statement)
                .map(|s| s.request_id)
                .unwrap_or_default();
            let resume_subject = fleet::resume_subject(fleet_rollout, &job.plan_id);
            let claims = Claims {
                action: action::RESUME,
                subject: &resume_subject,
                zone: &signed_zone,
                target: &signed_target,
                rule_target: &job.target,
                request_id: &request,
                emergency: false,
                requester_only: true,
            };
            if let Err(Refusal(why)) = verify::verify(policy, &claims, &resumes, now) {
                return Verdict::Refused(Refusal(format!("the resume: {why}")));
            }
            Some(request)
        }
    };
    Verdict::Approved(approved, resume)
}

/// A statement that claims to be a fleet's `resume` (checked by signature
/// like every other before it counts).
fn is_resume(signed: &pgrollout_shared::proto::SignedStatement) -> bool {
    pgrollout_shared::signing::Statement::decode(&signed.statement)
        .is_ok_and(|s| s.action == action::RESUME)
}

/// The zone and target the job's statements must name: this agent's zone
/// and the job's target, or — for a fleet's job — `*` and the hash of the
/// members it carries, once this agent's own target is found among them.
fn where_signed(zone: &str, job: &Job) -> Result<(String, String), Refusal> {
    let members = &job.approvals.fleet_members;
    if members.is_empty() {
        return Ok((zone.to_owned(), job.target.clone()));
    }
    let me = fleet::member(zone, &job.target);
    if !members.contains(&me) {
        return Err(Refusal(format!(
            "target {me} is not a member of the fleet the job's statements were signed for ({} member(s): {})",
            members.len(),
            members.join(", ")
        )));
    }
    Ok((fleet::ZONE.to_owned(), fleet::target_of(members)))
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
