//! Issue 19, item 4: smoke jobs and watch probes run SQL of a plan. A
//! hostile controller sends the prod agent (which has an `[approvals]`
//! policy) smoke jobs and watch samples whose SQL is not the smoke tests of
//! the plan in force there: a forged call under a deployed routine's name, a
//! SELECT of a table no plan has, a call of a function no deployed plan
//! has, the tests of a plan that has since been superseded. Each is refused
//! before any of it runs — what escapes a rollback (a sequence's `nextval`)
//! did not happen, the table is whole — and each refusal reaches the real
//! controller's audit log. The genuine smoke tests of the plan in force run.

mod signed_support;

use std::time::Duration;

use anyhow::Result;
use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{self, Outcome};
use pgrollout_shared::routine::{Routine, SmokeTest};
use pgrollout_shared::signing::role;
use pgrollout_shared::signing::sources::SourcePlan;
use pgrollout_shared::watch::WatchSampleSpec;
use signed_support::*;

/// `routine(name, answer)` with one smoke test calling `call`.
fn tested(name: &str, answer: i32, call: &str) -> Routine {
    Routine {
        smoke_tests: vec![SmokeTest {
            name: "answers".into(),
            call_sql: call.into(),
            expect_columns: vec![],
            max_duration: Duration::from_secs(10),
            allow_warnings: false,
            search_path: vec![],
        }],
        ..routine(name, answer)
    }
}

/// Deploys `routines` signed by alice, bob and carol under `request`.
async fn signed_deploy(s: &mut Scenario, routines: Vec<Routine>, request: &str) -> Result<()> {
    let job = deploy(routines, "main");
    let as_request = |role| pgrollout_shared::signing::Statement {
        request_id: request.into(),
        ..statement(&job, role)
    };
    let (alice, bob, carol) = (s.signer("alice")?, s.signer("bob")?, s.signer("carol")?);
    let statements = [
        (&alice, as_request(role::REQUESTER)),
        (&bob, as_request(role::APPROVER)),
        (&carol, as_request(role::APPROVER)),
    ];
    let mut job = signed(job, &statements)?;
    job.approvals.request_id = request.into();
    let (result, steps) = s.run(job).await?;
    anyhow::ensure!(
        result.outcome() == Outcome::Succeeded,
        "deploy: {} {steps:?}",
        result.message
    );
    Ok(())
}

/// A smoke job of `routines`, with `sources` as the plans they come from.
fn smoke(routines: Vec<Routine>, sources: Vec<Vec<Routine>>) -> Job {
    let mut job = deploy(routines.clone(), "main");
    job.actor = "controller".into();
    job.kind = JobKind::Smoke {
        routines,
        sources: sources
            .into_iter()
            .map(|routines| SourcePlan { routines })
            .collect(),
    };
    job
}

/// A watch sample probing `probes`, with `sources`.
fn watch(probes: Vec<Routine>, sources: Vec<Vec<Routine>>) -> Job {
    let mut job = smoke(probes.clone(), Vec::new());
    let mut spec = WatchSampleSpec::for_routines("w-signed".into(), probes);
    spec.sources = sources
        .into_iter()
        .map(|routines| SourcePlan { routines })
        .collect();
    job.plan_id = "watch:w-signed".into();
    job.kind = JobKind::WatchSample(spec);
    job
}

/// What escapes a rolled-back transaction, and what does not: the
/// sequence's last value and the victim table's rows.
async fn traces(s: &Scenario) -> Result<(i64, i64)> {
    let client = s.pg().connect().await?;
    let row = client
        .query_one(
            "SELECT (SELECT last_value FROM public.victim_seq), (SELECT count(*) FROM public.victim)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Runs `job` as the smoke job it is and as a watch sample of the same
/// probes: both refused with `expected` in the reason, nothing run.
async fn refused_both(s: &mut Scenario, what: &str, job: (Job, Job), expected: &str) -> Result<()> {
    let before = (traces(s).await?, s.ledger_rows().await?);
    for job in [job.0, job.1] {
        let kind = job.kind.name();
        let (result, steps) = s.run(job).await?;
        assert_eq!(
            result.outcome(),
            Outcome::ValidationFailed,
            "{what} ({kind}): {} {steps:?}",
            result.message
        );
        assert!(
            result.message.contains(expected),
            "{what} ({kind}): expected {expected:?} in {:?}",
            result.message
        );
        assert!(
            steps.iter().any(|s| s.starts_with("approvals: refused")),
            "{what} ({kind}): {steps:?}"
        );
        assert!(result.smoke.is_empty(), "{what} ({kind}): a test ran");
        assert_eq!(
            (traces(s).await?, s.ledger_rows().await?),
            before,
            "{what} ({kind}): the database changed (sequence, victim rows, ledger)"
        );
    }
    Ok(())
}

#[tokio::test]
async fn smoke_jobs_and_watch_probes_run_only_the_smoke_tests_of_the_plan_in_force() -> Result<()> {
    let mut s = Scenario::start().await?;
    s.pg()
        .connect()
        .await?
        .batch_execute(
            "CREATE TABLE public.victim (id int); INSERT INTO public.victim VALUES (1), (2), (3);
             CREATE SEQUENCE public.victim_seq;
             CREATE TABLE public.secrets (password text); INSERT INTO public.secrets VALUES ('hunter2');
             -- Made by hand: in no plan. Its nextval escapes any rollback.
             CREATE FUNCTION public.wipe() RETURNS bigint LANGUAGE sql AS
               'DELETE FROM public.victim; SELECT nextval(''public.victim_seq'')';",
        )
        .await?;
    let v1 = tested("watched", 1, "SELECT public.watched()");
    // signed_probe: what reconnecting asks the real controller the history of.
    let first = vec![v1.clone(), routine("signed_probe", 1)];
    signed_deploy(&mut s, first.clone(), "req-first").await?;
    let both = |routines: Vec<Routine>, sources: Vec<Vec<Routine>>| {
        (
            smoke(routines.clone(), sources.clone()),
            watch(routines, sources),
        )
    };

    // The deployed routine with a forged call, offered with its true plan…
    let forged = tested("watched", 1, "SELECT public.wipe()");
    refused_both(
        &mut s,
        "a forged call under a deployed routine",
        both(vec![forged.clone()], vec![first.clone()]),
        "differs from the routine of that name in every plan the job carries",
    )
    .await?;
    // …and with a plan of its own that holds it: not the plan in force.
    refused_both(
        &mut s,
        "a forged call in a plan of the controller's making",
        both(vec![forged.clone()], vec![vec![forged]]),
        "its latest ledger row",
    )
    .await?;
    // A SELECT of a table no plan has, with no plan or in one of its own.
    let reader = tested("watched", 1, "SELECT password FROM public.secrets");
    refused_both(
        &mut s,
        "a SELECT of a table no plan has",
        both(vec![reader.clone()], Vec::new()),
        "is in no plan the job carries",
    )
    .await?;
    refused_both(
        &mut s,
        "a SELECT of a table, in a plan of the controller's making",
        both(vec![reader.clone()], vec![vec![reader]]),
        "is not plan",
    )
    .await?;
    // A call of a function no deployed plan has (it exists, made by hand).
    let wipe = tested("wipe", 1, "SELECT public.wipe()");
    refused_both(
        &mut s,
        "a function no deployed plan has",
        both(vec![wipe.clone()], vec![vec![wipe]]),
        "records no change of public.wipe()",
    )
    .await?;

    // The plan in force: its smoke tests run, as a smoke job and as probes.
    let (result, steps) = s.run(smoke(first.clone(), vec![first.clone()])).await?;
    assert_eq!(
        result.outcome(),
        Outcome::Succeeded,
        "{} {steps:?}",
        result.message
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("approvals: the smoke tests are those of plan")),
        "{steps:?}"
    );
    assert_eq!(result.smoke.len(), 2, "{result:?}");
    let (result, _) = s.run(watch(first.clone(), vec![first.clone()])).await?;
    assert_eq!(result.outcome(), Outcome::Succeeded, "{}", result.message);
    let sample: proto::WatchSample = *result.watch_sample.expect("a sample");
    assert_eq!(sample.probes.len(), 2, "{sample:?}");

    // Superseded: a second plan deployed over it; the first plan's tests no
    // longer run, the second's do.
    let v2 = tested("watched", 2, "SELECT public.watched() * 2");
    signed_deploy(&mut s, vec![v2.clone()], "req-second").await?;
    refused_both(
        &mut s,
        "a superseded plan",
        both(first.clone(), vec![first.clone()]),
        "is not plan",
    )
    .await?;
    let (result, steps) = s.run(smoke(vec![v2.clone()], vec![vec![v2]])).await?;
    assert_eq!(
        result.outcome(),
        Outcome::Succeeded,
        "{} {steps:?}",
        result.message
    );

    // Every refusal (6 cases, each as a smoke job and a watch sample) reaches
    // the real controller's audit log, naming the job's kind.
    reconnect_to_the_real_controller(&mut s).await?;
    let entries = refused_job_entries(&s.stack)?;
    assert_eq!(entries.len(), 12, "{entries:#?}");
    for kind in ["smoke on target main", "watch_sample on target main"] {
        assert_eq!(
            entries.iter().filter(|e| e.contains(kind)).count(),
            6,
            "{kind}: {entries:#?}"
        );
    }
    Ok(())
}
