//! "What runs in an environment is what was approved there" (issue 13): in an
//! environment that requires approval, a deployer who is not an approver
//! cannot run SQL from a working copy — not through `smoke`, `perf`, `check`
//! or `alert create`. Each attack is checked where it would show: the rows,
//! the catalog, the ledger, a sequence the SQL would have advanced (sequences
//! are not transactional, so they show SQL that ran even when it was rolled
//! back), the audit log and the exit code.

use anyhow::{Context, Result};
use pgrollout_tests::{CommandOutput, Stack, StackOptions};

/// prod alone, with SEED.md's `require_approval`.
async fn prod() -> Result<Stack> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["prod".into()],
        environment_extra: vec![("prod".into(), "require_approval = true".into())],
        ..StackOptions::default()
    })
    .await?;
    stack
        .zone("prod")
        .pg
        .execute_sql(
            "CREATE TABLE public.victim (id integer PRIMARY KEY, v text NOT NULL);
             INSERT INTO public.victim SELECT g, 'secret' || g FROM generate_series(1, 5) g;
             CREATE SEQUENCE public.canary;",
        )
        .await?;
    Ok(stack)
}

/// `public.<name>()` returning `value`.
fn function(name: &str, value: i32) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE sql AS $$ SELECT {value} $$;\n"
    )
}

/// A sidecar whose smoke tests are these `(name, call)` pairs.
fn smoke_sidecar(tests: &[(&str, &str)]) -> String {
    tests
        .iter()
        .map(|(name, call)| {
            format!(
                "[[smoke_tests]]\nname = \"{name}\"\ncall = \"{}\"\n",
                call.replace('"', "\\\"")
            )
        })
        .collect()
}

const BENIGN: (&str, &str) = ("answers", "SELECT 1 AS one");

/// Deploys `name` to prod the only way a change gets there: requested by the
/// deployer, approved by an approver.
async fn deploy_approved(stack: &Stack, name: &str) -> Result<()> {
    let out = stack.cli(&["deploy", name, "prod"]).await?;
    anyhow::ensure!(
        out.code == 5 && out.stderr.contains("awaits approval"),
        "{out}"
    );
    let approved = stack
        .cli_as("approver-1", &["approve", &out.request_id()?, "--follow"])
        .await?;
    anyhow::ensure!(approved.code == 0, "approve --follow: {approved}");
    Ok(())
}

async fn victims(stack: &Stack) -> Result<Vec<i32>> {
    let client = stack.zone("prod").pg.connect().await?;
    let rows = client
        .query("SELECT id FROM public.victim ORDER BY id", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How often `public.canary` was advanced: by any SQL that ran at all.
async fn canary(stack: &Stack) -> Result<i64> {
    let client = stack.zone("prod").pg.connect().await?;
    let row = client
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.canary",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

async fn definition(stack: &Stack, signature: &str) -> Result<Option<String>> {
    let client = stack.zone("prod").pg.connect().await?;
    let row = client
        .query_one(
            "SELECT pg_get_functiondef(to_regprocedure($1))",
            &[&signature],
        )
        .await?;
    Ok(row.get(0))
}

async fn ledger_rows(stack: &Stack) -> Result<i64> {
    let client = stack.zone("prod").pg.connect().await?;
    let row = client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?;
    Ok(row.get(0))
}

async fn audit(stack: &Stack) -> Result<String> {
    let out = stack.cli(&["audit", "--output", "json"]).await?;
    anyhow::ensure!(out.code == 0, "{out}");
    Ok(out.stdout)
}

/// How many audit entries have this action.
fn count(audit: &str, action: &str) -> usize {
    audit.matches(&format!("\"action\":\"{action}\"")).count()
}

fn refused_for_approval(out: &CommandOutput) -> bool {
    out.code == 1 && out.stderr.contains("prod requires approval")
}

#[tokio::test]
async fn smoke_in_prod_runs_only_the_deployed_plans_tests() -> Result<()> {
    let stack = prod().await?;
    stack.write_procedure("sc.sql", &function("sc", 1))?;
    stack.write_procedure("sc.toml", &smoke_sidecar(&[BENIGN]))?;

    // Nothing deployed yet: nothing approved to run.
    let out = stack.cli(&["smoke", "sc", "prod"]).await?;
    assert!(refused_for_approval(&out), "{out}");
    assert!(
        out.stderr
            .contains("nothing deployed to prod has public.sc()"),
        "{out}"
    );

    deploy_approved(&stack, "sc").await?;
    let ledger = ledger_rows(&stack).await?;
    // The deployed plan's own tests run, by the deployer, without approval.
    let out = stack.cli(&["smoke", "sc", "prod"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(count(&audit(&stack).await?, "smoke.started"), 1);

    // Issue 13, seen 2: ROLLBACK ends the agent's transaction, the DELETE
    // would then run outside any. Refused before anything ran (here or, with
    // the plan-time refusal of transaction control, in the CLI).
    stack.write_procedure(
        "sc.toml",
        &smoke_sidecar(&[
            BENIGN,
            ("a", "ROLLBACK"),
            ("b", "DELETE FROM public.victim WHERE id = 4"),
        ]),
    )?;
    let out = stack.cli(&["smoke", "sc", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(victims(&stack).await?, vec![1, 2, 3, 4, 5], "{out}");

    // Any changed test is refused, with the rule and what to do instead.
    stack.write_procedure(
        "sc.toml",
        &smoke_sidecar(&[
            BENIGN,
            ("counts", "SELECT nextval('public.canary')"),
            ("deletes", "DELETE FROM public.victim WHERE id = 4"),
        ]),
    )?;
    let out = stack.cli(&["smoke", "sc", "prod"]).await?;
    assert!(refused_for_approval(&out), "{out}");
    assert!(
        out.stderr.contains(
            "the smoke tests of public.sc() in your working copy differ from those of plan"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("run `smoke` from that commit"), "{out}");

    // Issue 13, seen 4: a call that casts the table to int would print it
    // in its error. It never runs, so nothing is printed or stored.
    stack.write_procedure(
        "sc.toml",
        &smoke_sidecar(&[(
            "leaks",
            "SELECT CAST((SELECT string_agg(id || '=' || v, ',') FROM public.victim) AS int)",
        )]),
    )?;
    let out = stack.cli(&["smoke", "sc", "prod"]).await?;
    assert!(refused_for_approval(&out), "{out}");
    assert!(!out.to_string().contains("secret"), "{out}");
    let status = stack.cli(&["rollouts", "--env", "prod"]).await?;
    assert!(!status.to_string().contains("secret"), "{status}");

    assert_eq!(victims(&stack).await?, vec![1, 2, 3, 4, 5]);
    assert_eq!(canary(&stack).await?, 0, "working-copy SQL ran in prod");
    assert_eq!(ledger_rows(&stack).await?, ledger);
    let audit = audit(&stack).await?;
    assert!(!audit.contains("secret"), "{audit}");
    assert_eq!(count(&audit, "smoke.started"), 1, "{audit}");
    assert!(count(&audit, "smoke.refused") >= 3, "{audit}");
    assert!(
        audit.contains("\"actor\":\"test-operator\""),
        "the refusals name the deployer: {audit}"
    );
    Ok(())
}

#[tokio::test]
async fn perf_and_check_in_prod_cannot_create_or_change_a_routine() -> Result<()> {
    let stack = prod().await?;
    stack.write_procedure("pf.sql", &function("pf", 1))?;
    stack.write_procedure(
        "pf.toml",
        "[perf]\ncall = \"SELECT public.pf()\"\nruns = 3\n",
    )?;
    deploy_approved(&stack, "pf").await?;
    let deployed = definition(&stack, "public.pf()")
        .await?
        .context("pf was deployed")?;
    let ledger = ledger_rows(&stack).await?;

    // Issue 13, seen 3: a COMMIT as the probe made the working copy's body
    // live, with no ledger row and no backup.
    stack.write_procedure("pf.sql", &function("pf", 2))?;
    stack.write_procedure("pf.toml", "[perf]\ncall = \"COMMIT\"\nruns = 1\n")?;
    let out = stack.cli(&["perf", "pf", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");

    // Any probe of a working copy, and a routine prod has never seen.
    stack.write_procedure(
        "pf.toml",
        "[perf]\ncall = \"SELECT public.pf(), nextval('public.canary')\"\nruns = 1\n",
    )?;
    stack.write_procedure("pnew.sql", &function("pnew", 3))?;
    stack.write_procedure("pnew.toml", "[perf]\ncall = \"SELECT public.pnew()\"\n")?;
    for procedure in ["pf", "pnew"] {
        let out = stack.cli(&["perf", procedure, "prod"]).await?;
        assert!(refused_for_approval(&out), "{out}");
        assert!(
            out.stderr
                .contains("there it runs only as part of a deploy"),
            "{out}"
        );
        let out = stack.cli(&["check", procedure, "prod"]).await?;
        assert!(refused_for_approval(&out), "{out}");
    }

    assert_eq!(definition(&stack, "public.pf()").await?, Some(deployed));
    assert_eq!(definition(&stack, "public.pnew()").await?, None);
    assert_eq!(ledger_rows(&stack).await?, ledger);
    assert_eq!(canary(&stack).await?, 0, "working-copy SQL ran in prod");
    let audit = audit(&stack).await?;
    assert_eq!(count(&audit, "perf_probe.started"), 0, "{audit}");
    assert_eq!(count(&audit, "check.started"), 0, "{audit}");
    assert!(count(&audit, "perf.refused") >= 2, "{audit}");
    assert!(count(&audit, "check.refused") >= 2, "{audit}");
    Ok(())
}

#[tokio::test]
async fn alert_create_in_prod_probes_only_what_is_deployed_there() -> Result<()> {
    let stack = prod().await?;
    let alert = |name: &'static str| {
        let project = stack.project.to_string_lossy().to_string();
        let stack = &stack;
        async move {
            stack
                .cli(&[
                    "alert",
                    "create",
                    name,
                    "prod",
                    "--every",
                    "1s",
                    "--for",
                    "10m",
                    "--project",
                    &project,
                ])
                .await
        }
    };

    // Issue 13, seen 2: the baseline probe of `alert create` deleted a row.
    stack.write_procedure("wa.sql", &function("wa", 1))?;
    stack.write_procedure(
        "wa.toml",
        &smoke_sidecar(&[
            ("a", "ROLLBACK"),
            ("b", "DELETE FROM public.victim WHERE id = 3"),
        ]),
    )?;
    let out = alert("wa").await?;
    assert_eq!(victims(&stack).await?, vec![1, 2, 3, 4, 5], "{out}");

    // Nothing deployed: the watch is created without a probe, and says so.
    stack.write_procedure("wb.sql", &function("wb", 1))?;
    stack.write_procedure(
        "wb.toml",
        &smoke_sidecar(&[("counts", "SELECT nextval('public.canary')")]),
    )?;
    let out = alert("wb").await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("nothing deployed there has public.wb, so the watch has no probe for it"),
        "{out}"
    );

    // Deployed: the probe is the deployed plan's smoke test, not the working
    // copy's, which counts on the canary.
    stack.write_procedure("wc.sql", &function("wc", 1))?;
    stack.write_procedure("wc.toml", &smoke_sidecar(&[BENIGN]))?;
    deploy_approved(&stack, "wc").await?;
    stack.write_procedure(
        "wc.toml",
        &smoke_sidecar(&[("counts", "SELECT nextval('public.canary')")]),
    )?;
    let out = alert("wc").await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("the probes are the smoke tests of the plan deployed there"),
        "{out}"
    );
    assert!(out.stdout.contains("answers"), "the deployed probe: {out}");

    assert_eq!(canary(&stack).await?, 0, "working-copy SQL ran in prod");
    assert_eq!(victims(&stack).await?, vec![1, 2, 3, 4, 5]);
    let audit = audit(&stack).await?;
    assert!(count(&audit, "watch.created") >= 2, "{audit}");
    Ok(())
}
