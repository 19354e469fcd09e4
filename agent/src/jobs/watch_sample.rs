//! A post-deploy watch's sample (issue 7): read `track_functions` and the
//! watched routines' `pg_stat_user_functions` counters, then probe for
//! failing calls by running their smoke tests in a transaction that is
//! rolled back. Changes nothing and keeps nothing: the controller holds the
//! watch, its baseline and its verdicts.
//!
//! Why a probe: PostgreSQL counts a call in `pg_stat_user_functions` only
//! when it returns, so a call that raises an error leaves no trace in the
//! counters; failing calls can only be seen by making one. The probe's own
//! calls are kept out of the counters with `SET LOCAL track_functions =
//! none` when the agent's role may set it (superuser, or `GRANT SET ON
//! PARAMETER`), so they do not skew the mean the watch compares.
//!
//! No step events: a sample reports its result only, every few seconds, and
//! a watch is not a rollout — but a refusal (with an `[approvals]` policy,
//! probes that are not the smoke tests of the plan in force there,
//! `deployed_sql.rs`) is said as the `approvals` step and kept, as any.

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{JobResult, Outcome, WatchSample};
use pgrollout_shared::watch::WatchSampleSpec;

use pgrollout_shared::signing::sources::Claim;
use pgrollout_shared::signing::verify::Refusal;

use super::deployed_sql;
use super::smoke::run_smoke_tests;
use crate::jobs::context::{failed_result, Finished, JobContext, JobFailure};
use crate::sql::{self, watch_stats, TargetConnection};

pub async fn run(ctx: &JobContext, spec: &WatchSampleSpec) -> Finished {
    let claims = match deployed_sql::claims(ctx, "this watch sample", &spec.probes, &spec.sources) {
        Ok(claims) => claims,
        Err(refused) => return *refused,
    };
    let started = std::time::Instant::now();
    match sample(ctx, spec, claims.as_deref()).await {
        Ok(Err(refusal)) => deployed_sql::refused(ctx, &refusal, started.elapsed()),
        Ok(Ok(sample)) => Finished::from(JobResult {
            outcome: Outcome::Succeeded as i32,
            message: format!(
                "sampled {} routine(s), {} probe(s)",
                sample.functions.len(),
                sample.probes.len()
            ),
            watch_sample: Some(Box::new(sample)),
            ..Default::default()
        }),
        Err(failure) => failed_result(failure, Vec::new()),
    }
}

/// The sample, or the refusal of its probes (`claims`: the plans in force
/// they must be the smoke tests of, with a policy).
async fn sample(
    ctx: &JobContext,
    spec: &WatchSampleSpec,
    claims: Option<&[Claim]>,
) -> Result<Result<WatchSample, Refusal>, JobFailure> {
    let mut conn = sql::connect(&ctx.target, &ctx.config.timeouts)
        .await
        .map_err(|e| {
            // A sample that cannot be taken failed, whatever the reason.
            let mut failure = JobFailure::connect(e);
            failure.outcome = Outcome::DeployFailed;
            failure
        })?;
    let read_failed =
        |e: tokio_postgres::Error| JobFailure::database("reading pg_stat_user_functions failed", e);
    // Read before probing: each statement outside a transaction sees fresh
    // statistics (stats_fetch_consistency caches them per transaction).
    let track_functions = watch_stats::track_functions(&conn.client)
        .await
        .map_err(read_failed)?;
    let functions = watch_stats::function_stats(&conn.client, &spec.names)
        .await
        .map_err(read_failed)?;
    let sampled_at_unix_ms = now_unix_ms();
    let (probes, probe_calls_excluded) = match probe(ctx, &mut conn, spec, claims).await? {
        Ok(probed) => probed,
        Err(refusal) => return Ok(Err(refusal)),
    };
    Ok(Ok(WatchSample {
        sampled_at_unix_ms,
        track_functions,
        functions,
        probes,
        probe_calls_excluded,
    }))
}

/// What a probe found: the reports, and whether its calls were kept out of
/// the counters.
type Probed = (Vec<pgrollout_shared::proto::SmokeReport>, bool);

/// The smoke tests of every probe routine, in one transaction that is
/// rolled back; `true` when the probe's calls were kept out of the counters.
/// With `claims`, first confirmed in that transaction to be the plan in force.
async fn probe(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    spec: &WatchSampleSpec,
    claims: Option<&[Claim]>,
) -> Result<Result<Probed, Refusal>, JobFailure> {
    let db = |e: tokio_postgres::Error| JobFailure::database("probing failed", e);
    crate::jobs::context::txn_seal::begin_client(conn)
        .await
        .map_err(db)?;
    if let Some(claims) = claims {
        let confirmed = deployed_sql::confirm(ctx, conn, claims, false).await;
        if !matches!(confirmed, Ok(Ok(()))) {
            let _ = conn.client.batch_execute("ROLLBACK").await;
        }
        if let Err(refusal) = confirmed? {
            return Ok(Err(refusal));
        }
    }
    let excluded = watch_stats::stop_counting_calls(&conn.client)
        .await
        .map_err(db)?;
    let reports = run_smoke_tests(conn, &spec.probes, "watch").await;
    let sealed = crate::jobs::context::txn_seal::confirm(conn).await;
    let _ = conn.client.batch_execute("ROLLBACK").await;
    sealed.map_err(|why| {
        JobFailure::deploy(format!(
            "probing failed: {}",
            crate::jobs::context::txn_seal::escaped_message(
                "a watch probe (smoke test call)",
                &why
            )
        ))
    })?;
    Ok(Ok((reports.map_err(db)?, excluded)))
}
