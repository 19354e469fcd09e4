//! With an `[approvals]` policy, a smoke job and a watch sample's probes run
//! only the smoke tests of the plan in force on their target (issue 19, item
//! 4; README, Trust model). Their SQL runs in a transaction that is rolled
//! back, but what a SELECT reads, a sequence's `nextval` or a function's
//! effect outside the database still happen: a compromised controller must
//! not choose it.
//!
//! Two halves. Before connecting ([`claims`]): each plan the job carries is
//! hashed to its plan id, and each routine whose tests run must be found
//! unchanged in one of them (`signing::sources`). Then, inside the very
//! transaction the tests will run in and before any of them ([`confirm`]):
//! each routine exists, and the newest row of its own target's ledger names
//! that plan id. The ledger is written by this agent only, in the transaction
//! of each change, and with the policy on only for changes whose signatures
//! it verified: a plan id found there as a routine's latest is the signed plan
//! in force, and one that has since been superseded (a later deploy, a
//! rollback, a retire) is not. No operator signs anything more.

use std::time::{Duration, Instant};

use pgrollout_shared::proto::{JobResult, Outcome, StepStatus};
use pgrollout_shared::routine::Routine;
use pgrollout_shared::signing::sources::{self, Claim, SourcePlan};
use pgrollout_shared::signing::verify::Refusal;
use tokio_postgres::types::Type;

use super::context::{millis, Finished, JobContext, JobFailure};
use crate::sql::{quote_identifier, TargetConnection};

/// The first half, before any connection: `Ok(None)` without a policy (the
/// job runs as before), the claims to confirm in the ledger, or the refused
/// job's result. `what` names the SQL in the reason ("the smoke tests").
pub fn claims(
    ctx: &JobContext,
    what: &str,
    routines: &[Routine],
    sources: &[SourcePlan],
) -> Result<Option<Vec<Claim>>, Box<Finished>> {
    if ctx.config.approval_policy.is_none() {
        return Ok(None);
    }
    let started = Instant::now();
    sources::claims(what, routines, sources)
        .map(Some)
        .map_err(|refusal| Box::new(refused(ctx, &refusal, started.elapsed())))
}

/// The second half, on `conn` inside the transaction the tests run in:
/// `Ok(Err(refusal))` when a routine is missing or its latest ledger row
/// names another plan (or none). Says so as the `approvals` step when `step`.
pub async fn confirm(
    ctx: &JobContext,
    conn: &TargetConnection,
    claims: &[Claim],
    step: bool,
) -> Result<Result<(), Refusal>, JobFailure> {
    let started = Instant::now();
    let verdict = in_force(ctx, conn, claims).await?;
    if verdict.is_ok() && step {
        let plans: std::collections::BTreeSet<&str> =
            claims.iter().map(|c| short(&c.plan_id)).collect();
        ctx.event(
            "approvals",
            StepStatus::Succeeded,
            format!(
                "the smoke tests are those of plan {} in force on target {} (its ledger)",
                plans.into_iter().collect::<Vec<_>>().join(", "),
                ctx.target.name
            ),
            millis(started.elapsed()),
            Vec::new(),
        );
    }
    Ok(verdict)
}

async fn in_force(
    ctx: &JobContext,
    conn: &TargetConnection,
    claims: &[Claim],
) -> Result<Result<(), Refusal>, JobFailure> {
    if claims.is_empty() {
        return Ok(Ok(()));
    }
    let target = &ctx.target.name;
    let wanted: Vec<_> = claims
        .iter()
        .map(|c| (&c.routine, c.search_path.as_slice()))
        .collect();
    let signatures = crate::sql::signatures::signatures_for(conn, &wanted)
        .await
        .map_err(|e| JobFailure::database("cannot read the catalog", e))?;
    let found = in_ledger(conn, &ctx.target.ledger_schema, &signatures)
        .await
        .map_err(|e| JobFailure::database("cannot read the ledger", e))?;
    for (claim, found) in claims.iter().zip(found) {
        let Some(latest) = found else {
            return Ok(Err(Refusal(format!(
                "{} does not exist on target {target}: no plan in force there has its smoke tests",
                claim.routine
            ))));
        };
        let Some((id, plan_id, action)) = latest else {
            return Ok(Err(Refusal(format!(
                "the ledger of target {target} records no change of {}: plan {} was never deployed there",
                claim.routine,
                short(&claim.plan_id)
            ))));
        };
        if plan_id != claim.plan_id {
            return Ok(Err(Refusal(format!(
                "{} on target {target} is not plan {}'s: its latest ledger row ({id}, {action}) records plan {}, \
                 so only that plan's smoke tests run there",
                claim.routine,
                short(&claim.plan_id),
                if plan_id.is_empty() { "none" } else { short(&plan_id) }
            ))));
        }
    }
    Ok(Ok(()))
}

/// The newest ledger row (id, plan id, action) of each routine, in the order
/// given: `None` for a routine that does not exist, `Some(None)` for one the
/// ledger has no row of (or no ledger yet). One statement: each signature
/// resolved to the `regprocedure` text the ledger keys rows by (as a deploy
/// resolves it, `catalog_snapshot.sql`), then one index probe per identity.
#[allow(clippy::type_complexity)]
async fn in_ledger(
    conn: &TargetConnection,
    schema: &str,
    signatures: &[String],
) -> Result<Vec<Option<Option<(i64, String, String)>>>, tokio_postgres::Error> {
    let table = format!("{}.ledger", quote_identifier(schema));
    let exists: bool = conn
        .client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table, Type::TEXT)],
        )
        .await?
        .get(0);
    let ledger = if exists {
        format!(
            "LEFT JOIN LATERAL (SELECT x.id, x.plan_id, x.action FROM {table} x \
             WHERE x.identity = p.oid::regprocedure::text ORDER BY x.id DESC LIMIT 1) l ON true"
        )
    } else {
        "LEFT JOIN (SELECT NULL::bigint AS id, NULL::text AS plan_id, NULL::text AS action) l ON false"
            .to_owned()
    };
    let query = format!(
        "SELECT p.oid IS NOT NULL, l.id, l.plan_id, l.action \
         FROM unnest($1::text[]) WITH ORDINALITY AS wanted(signature, position) \
         LEFT JOIN pg_proc p ON p.oid = to_regprocedure(wanted.signature)::oid \
         {ledger} ORDER BY wanted.position"
    );
    let rows = conn
        .client
        .query_typed(&query, &[(&signatures, Type::TEXT_ARRAY)])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let exists: bool = row.get(0);
            let id: Option<i64> = row.get(1);
            exists.then(|| id.map(|id| (id, row.get(2), row.get(3))))
        })
        .collect())
}

/// The refused job's result, kept for every controller the agent connects to
/// next and said as the `approvals` step: exit 1, nothing ran.
pub fn refused(ctx: &JobContext, refusal: &Refusal, elapsed: Duration) -> Finished {
    let reason = refusal.to_string();
    tracing::warn!(job_id = %ctx.job.id, %reason, "job refused");
    crate::refusals::keep_for_job(&ctx.config, &ctx.job, ctx.controller(), &reason);
    ctx.event(
        "approvals",
        StepStatus::Failed,
        reason.clone(),
        millis(elapsed),
        Vec::new(),
    );
    Finished::from(JobResult {
        outcome: Outcome::ValidationFailed as i32,
        message: reason,
        ..Default::default()
    })
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
