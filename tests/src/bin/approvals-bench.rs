//! What signed approvals add to a job (issue 19, item 6): the agent's check
//! as `jobs::execute` runs it — the plan id recomputed from the routines,
//! three statements' certificates chained, signatures verified, bindings and
//! the approvers rule — timed in process, for a one-routine deploy and for a
//! batch, then the request reserved for its target (`signing::replay`: read,
//! append, fdatasync), plus what signing one statement costs the CLI. Then
//! what a smoke job (or watch sample) of a signed plan checks before it
//! connects: the plan it carries hashed and each routine found in it
//! (`signing::sources::claims`); its two ledger queries are timed by
//! `deploy/bench/smoke-check.sh`.
//!
//!   approvals-bench <operators-ca-dir> [runs]
//!
//! The directory holds `ca.pem` and `operator-{alice,bob,carol}.{pem,key}`
//! (`deploy/bench/approvals.sh` makes them with `pgrollout ca`).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use pgrollout_shared::routine::{Routine, RoutineIdentity, RoutineKind};
use pgrollout_shared::signing::policy::{ApprovalPolicy, ApprovalsConfig};
use pgrollout_shared::signing::verify::{verify, Claims};
use pgrollout_shared::signing::{action, replay, role, Signer, Statement};

fn routine(i: usize) -> Routine {
    Routine {
        identity: RoutineIdentity {
            schema: "bench".into(),
            name: format!("f{i:04}"),
            arg_types: vec!["integer".into()],
        },
        kind: RoutineKind::Function,
        create_sql: format!(
            "CREATE OR REPLACE FUNCTION bench.f{i:04}(x integer) RETURNS integer LANGUAGE plpgsql AS $$ BEGIN RETURN x + {i}; END $$"
        ),
        grants: vec![],
        smoke_tests: vec![pgrollout_shared::routine::SmokeTest {
            name: "answers".into(),
            call_sql: format!("SELECT bench.f{i:04}(1)"),
            expect_columns: vec![],
            max_duration: Duration::from_secs(2),
            allow_warnings: false,
            search_path: vec!["bench".into()],
        }],
        source_path: format!("procedures/f{i:04}.sql"),
        depends_on: vec![],
        perf_probe: None,
        pgtap: None,
        source_line: 0,
        search_path: vec!["bench".into()],
        retire: None,
        companion_sql: Vec::new(),
    }
}

fn median_and_p95(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = ((samples.len() * 95).div_ceil(100)).saturating_sub(1);
    (ms(samples[samples.len() / 2]), ms(samples[p95]))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: approvals-bench <operators-ca-dir> [runs]")?,
    );
    let runs: usize = args.next().map_or(Ok(200), |r| r.parse())?;
    let signer = |name: &str| {
        Signer::load(
            &dir.join(format!("operator-{name}.pem")),
            &dir.join(format!("operator-{name}.key")),
        )
    };
    let (alice, bob, carol) = (signer("alice")?, signer("bob")?, signer("carol")?);
    let policy = ApprovalPolicy::load(ApprovalsConfig {
        operator_ca: dir.join("ca.pem"),
        environment: "prod".into(),
        approvers: vec!["bob".into(), "carol".into()],
        admins: vec![],
        required_approvers: 2,
        operation_approvers: 0,
        targets: Default::default(),
        emergency_requires_admin: true,
        revocation_list: None,
    })?;
    println!("runs per case: {runs}");
    for size in [1usize, 100, 1000] {
        let routines: Vec<Routine> = (0..size).rev().map(routine).collect();
        let plan_id = pgrollout_shared::plan_id::plan_id_of_job(&routines);
        let statement = |role: &str| Statement {
            action: action::DEPLOY.into(),
            role: role.into(),
            plan_id: plan_id.clone(),
            environment: "prod".into(),
            zone: "prod".into(),
            target: "main".into(),
            request_id: "req-bench".into(),
            reason: String::new(),
            expires_unix_ms: pgrollout_shared::job::now_unix_ms() + 3_600_000,
        };
        let mut sign_times = Vec::with_capacity(runs);
        let mut signatures = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let signed = bob.sign(&statement(role::APPROVER))?;
            sign_times.push(started.elapsed());
            signatures = vec![
                alice.sign(&statement(role::REQUESTER))?,
                signed,
                carol.sign(&statement(role::APPROVER))?,
            ];
        }
        let mut check_times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let computed = pgrollout_shared::plan_id::plan_id_of_job(&routines);
            let claims = Claims {
                action: action::DEPLOY,
                subject: &computed,
                zone: "prod",
                target: "main",
                rule_target: "main",
                request_id: "req-bench",
                emergency: false,
                requester_only: false,
            };
            verify(&policy, &claims, &signatures, SystemTime::now())
                .map_err(|refusal| anyhow::anyhow!("{refusal}"))?;
            check_times.push(started.elapsed());
        }
        // Then, as jobs::execute does, the request reserved for its target
        // (read the record, append, fdatasync): one new request per job, the
        // record growing as an agent's does.
        let record = dir.join(format!("signed-requests-{size}"));
        let mut reserve_times = Vec::with_capacity(runs);
        for run in 0..runs {
            let started = Instant::now();
            replay::reserve(&record, "main", &format!("p-bench-{run}"), "j-bench", 1)
                .map_err(|refusal| anyhow::anyhow!("{refusal}"))?;
            reserve_times.push(started.elapsed());
        }
        let totals: Vec<Duration> = check_times
            .iter()
            .zip(&reserve_times)
            .map(|(check, reserve)| *check + *reserve)
            .collect();
        let (sign_median, sign_p95) = median_and_p95(sign_times);
        let (check_median, check_p95) = median_and_p95(check_times);
        let (reserve_median, reserve_p95) = median_and_p95(reserve_times);
        let (total_median, total_p95) = median_and_p95(totals);
        println!(
            "{size:>5} routine(s): agent check (plan id + 3 signatures) median {check_median:.3} ms, p95 {check_p95:.3} ms; \
             request reserved (fsync) median {reserve_median:.3} ms, p95 {reserve_p95:.3} ms; \
             per job median {total_median:.3} ms, p95 {total_p95:.3} ms; \
             CLI signing one statement median {sign_median:.3} ms, p95 {sign_p95:.3} ms"
        );
        // A smoke job of the whole plan, carrying it: hash it, find each
        // routine in it (the agent's half before it connects).
        let sources = [pgrollout_shared::signing::sources::SourcePlan {
            routines: routines.clone(),
        }];
        let mut smoke_times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let claims =
                pgrollout_shared::signing::sources::claims("this smoke job", &routines, &sources)
                    .map_err(|refusal| anyhow::anyhow!("{refusal}"))?;
            anyhow::ensure!(claims.len() == size && claims[0].plan_id == plan_id);
            smoke_times.push(started.elapsed());
        }
        let (smoke_median, smoke_p95) = median_and_p95(smoke_times);
        println!(
            "{size:>5} routine(s): smoke job's plan check (hash + find each routine) median {smoke_median:.3} ms, \
             p95 {smoke_p95:.3} ms"
        );
    }
    Ok(())
}
