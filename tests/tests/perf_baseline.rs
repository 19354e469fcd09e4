//! The performance gate judges what the target runs (issue 23): PROD's gate
//! compares a plan's new median with the median of the version PROD runs
//! now, both timed in the same probe run in QA — never with whatever QA ran
//! before, which let a series of deploys ratchet PROD slower. A probe that
//! fails is a failure, said in QA and refused in PROD with its error.
//! Real clusters, real binaries; speeds set by pg_sleep with wide margins.

use anyhow::Result;
use pgrollout_tests::{CommandOutput, Stack, StackOptions};

/// dev → qa (probes after each deploy) → prod (performance gate).
async fn three_environments(prod_extra: &str) -> Result<Stack> {
    Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into(), "prod".into()],
        environment_extra: vec![
            (
                "qa".into(),
                "promote_from = \"dev\"\nrun_perf_probe = true".into(),
            ),
            (
                "prod".into(),
                format!("promote_from = \"qa\"\ngates = [\"performance\"]\n{prod_extra}"),
            ),
        ],
        ..StackOptions::default()
    })
    .await
}

/// Deploys the project's `name` to dev, then qa; returns qa's output.
async fn through_qa(stack: &Stack, name: &str) -> Result<CommandOutput> {
    for environment in ["dev", "qa"] {
        let out = stack.cli(&["deploy", name, environment]).await?;
        anyhow::ensure!(out.code == 0, "deploy to {environment}: {out}");
        if environment == "qa" {
            return Ok(out);
        }
    }
    unreachable!("qa is the last environment")
}

/// `ratchet(10)` sleeps `ms` milliseconds; `version` marks the text.
fn ratchet(version: &str, ms: u32) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.ratchet(p_unit integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
BEGIN
  -- {version}
  PERFORM pg_sleep({ms} * p_unit / 10000.0);
  RETURN p_unit;
END
$$;
"
    )
}

/// The percentage in `… is 250% of the old median …`.
fn refused_percent(stderr: &str) -> Option<u32> {
    stderr.split(" is ").nth(1)?.split('%').next()?.parse().ok()
}

async fn prod_source(stack: &Stack) -> Result<String> {
    let prod = stack.zone("prod").pg.connect().await?;
    Ok(prod
        .query_one("SELECT prosrc FROM pg_proc WHERE proname = 'ratchet'", &[])
        .await?
        .get(0))
}

#[tokio::test]
async fn prod_refuses_a_version_slower_than_what_prod_runs_even_when_faster_than_qas_last(
) -> Result<()> {
    let stack = three_environments("").await?;
    stack.write_procedure(
        "ratchet.toml",
        "[perf]\ncall = \"SELECT public.ratchet(10)\"\nruns = 5\n",
    )?;

    // v4 (20 ms) is new everywhere: no baseline, said so, and PROD takes it.
    stack.write_procedure("ratchet.sql", &ratchet("v4", 20))?;
    let qa = through_qa(&stack, "ratchet").await?;
    assert!(
        qa.stdout
            .contains("public.ratchet(integer): new in prod, no baseline; new median"),
        "{qa}"
    );
    let out = stack.cli(&["deploy", "ratchet", "prod"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(
            "gate [ok] performance: public.ratchet(integer): new in prod: no baseline to compare with (new median "
        ),
        "{out}"
    );

    // v3 (60 ms): QA says PROD will refuse it, and PROD does.
    stack.write_procedure("ratchet.sql", &ratchet("v3", 60))?;
    let qa = through_qa(&stack, "ratchet").await?;
    assert!(qa.stdout.contains("[FAIL] perf-probe"), "{qa}");
    assert!(qa.stdout.contains("(prod's version (plan "), "{qa}");
    assert!(
        qa.stdout
            .contains("over prod's 120% limit: prod's performance gate will refuse this plan"),
        "{qa}"
    );
    let out = stack.cli(&["deploy", "ratchet", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");

    // v5 (50 ms) is faster than v3, which QA ran last, but 2.5 times as slow
    // as v4, which PROD runs: refused, both medians named.
    stack.write_procedure("ratchet.sql", &ratchet("v5", 50))?;
    let qa = through_qa(&stack, "ratchet").await?;
    assert!(
        qa.stdout
            .contains("over prod's 120% limit: prod's performance gate will refuse this plan"),
        "{qa}"
    );
    let out = stack.cli(&["deploy", "ratchet", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("gate performance refused: public.ratchet(integer): new median "),
        "{out}"
    );
    assert!(
        out.stderr.contains("of the old median ")
            && out.stderr.contains(" of prod's version (plan "),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("over the 120% limit (probe in qa, rollout r-"),
        "{out}"
    );
    let percent = refused_percent(&out.stderr).unwrap_or_default();
    assert!((180..=400).contains(&percent), "about 250%: {out}");
    assert!(prod_source(&stack).await?.contains("-- v4"), "PROD kept v4");

    // On demand, `perf qa` times what PROD runs too.
    let out = stack.cli(&["perf", "ratchet", "qa"]).await?;
    assert!(out.stdout.contains("(prod's version (plan "), "{out}");
    assert!(
        out.stdout
            .contains("prod's performance gate will refuse this plan"),
        "{out}"
    );
    Ok(())
}

fn divider(body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.divider(p integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
BEGIN
  RETURN {body};
END
$$;
"
    )
}

#[tokio::test]
async fn a_failed_probe_is_refused_with_its_error_and_a_routine_new_in_prod_as_configured(
) -> Result<()> {
    let stack = three_environments("performance_new_routine = \"refuse\"").await?;
    stack.write_procedure(
        "divider.toml",
        "[perf]\ncall = \"SELECT public.divider(0)\"\nruns = 3\n",
    )?;

    // The probe's call fails: QA's deploy succeeds, but says so with [FAIL] and
    // that PROD will refuse; PROD refuses, naming the probe's error.
    stack.write_procedure("divider.sql", &divider("100 / p"))?;
    let qa = through_qa(&stack, "divider").await?;
    assert!(qa.stdout.contains("[FAIL] perf-probe"), "{qa}");
    assert!(
        qa.stdout.contains(
            "public.divider(integer): not measured: the call failed on the new definition: "
        ),
        "{qa}"
    );
    assert!(qa.stdout.contains("22012"), "{qa}");
    assert!(
        qa.stdout
            .contains("prod's performance gate will refuse this plan: the probe failed"),
        "{qa}"
    );
    let out = stack.cli(&["deploy", "divider", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "gate performance refused: public.divider(integer): the performance probe failed: the call failed on the \
             new definition: "
        ),
        "{out}"
    );
    assert!(out.stderr.contains("division by zero"), "{out}");
    assert!(!out.stderr.contains("deploy the plan there with"), "{out}");

    // Fixed, it measures; PROD runs no version of it, and this PROD refuses a
    // routine with no baseline (performance_new_routine = "refuse").
    stack.write_procedure("divider.sql", &divider("100 / NULLIF(p, 0)"))?;
    let qa = through_qa(&stack, "divider").await?;
    assert!(qa.stdout.contains("[ok] perf-probe"), "{qa}");
    let out = stack.cli(&["deploy", "divider", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "gate performance refused: public.divider(integer): new in prod: no baseline to compare with (new median "
        ),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("3 runs); performance_new_routine = \"refuse\""),
        "{out}"
    );
    Ok(())
}
