//! `pgrollout batch`: a list of procedures deployed as one plan in
//! dependency order — all or nothing, or each on its own with
//! `--continue-on-error` — with live progress and an exact summary.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{window_from_now, Stack, StackOptions};

/// SQL-language functions: PostgreSQL validates their bodies at CREATE time,
/// so each callee must exist before its caller.
const CHAIN: [(&str, &str); 4] = [
    ("chain_a", "CREATE OR REPLACE FUNCTION public.chain_a() RETURNS integer LANGUAGE sql AS 'SELECT 1';"),
    ("chain_b", "CREATE OR REPLACE FUNCTION public.chain_b() RETURNS integer LANGUAGE sql AS 'SELECT public.chain_a() + 1';"),
    ("chain_c", "CREATE OR REPLACE FUNCTION public.chain_c() RETURNS integer LANGUAGE sql AS 'SELECT public.chain_b() * 10';"),
    ("chain_d", "CREATE OR REPLACE FUNCTION public.chain_d(n integer) RETURNS integer LANGUAGE sql\nBEGIN ATOMIC\n  SELECT public.chain_c() + public.chain_b() + n;\nEND;"),
];

/// `chain_d` before PostgreSQL 14, which has no SQL-standard bodies: the
/// same calls in a quoted body, validated at CREATE as well.
const CHAIN_D_13: &str =
    "CREATE OR REPLACE FUNCTION public.chain_d(n integer) RETURNS integer LANGUAGE sql\n\
    AS 'SELECT public.chain_c() + public.chain_b() + n';";

async fn write_chain(stack: &Stack) -> Result<()> {
    let before_14 = stack.zone("dev").pg.server_major().await? < 14;
    for (name, sql) in CHAIN {
        let sql = if name == "chain_d" && before_14 {
            CHAIN_D_13
        } else {
            sql
        };
        stack.write_procedure(&format!("{name}.sql"), sql)?;
    }
    stack.write_procedure(
        "chain_d.toml",
        "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"perseus_app\"]\n[[smoke_tests]]\nname = \"adds up\"\ncall = \"SELECT public.chain_d(1) AS total\"\nexpect_columns = [ { name = \"total\", type = \"integer\" } ]\n",
    )?;
    Ok(())
}

fn write_list(stack: &Stack, name: &str, text: &str) -> Result<String> {
    let path = stack.dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// Every routine in `public` with its definition and ACL, plus the ledger.
async fn catalog(client: &Client) -> Result<Vec<String>> {
    let mut rows: Vec<String> = client
        .query(
            "SELECT p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid)) || ' ' || coalesce(p.proacl::text, '-') \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ledger: Option<String> = client
        .query_one("SELECT to_regclass('pgrollout.ledger')::text", &[])
        .await?
        .get(0);
    if ledger.is_some() {
        let count: i64 = client
            .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
            .await?
            .get(0);
        rows.push(format!("ledger rows: {count}"));
    }
    Ok(rows)
}

#[tokio::test]
async fn a_shuffled_list_deploys_in_dependency_order_with_progress_and_an_exact_summary(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    write_chain(&stack).await?;
    let list = write_list(
        &stack,
        "sprint1.txt",
        "# sprint 1\nchain_d\n\nchain_b   # the middle\nchain_a\nchain_c\n",
    )?;

    let dry = stack.cli(&["batch", "dev", &list, "--dry-run"]).await?;
    assert_eq!(dry.code, 0, "{dry}");
    let order: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(order.len(), 4, "{dry}");
    for (line, name) in
        order
            .iter()
            .zip(["chain_a()", "chain_b()", "chain_c()", "chain_d(integer)"])
    {
        assert!(
            line.contains(&format!("public.{name}")),
            "{line} should be {name}:\n{dry}"
        );
    }
    let client = stack.zone("dev").pg.connect().await?;
    let untouched = catalog(&client).await?;
    assert!(
        !untouched.iter().any(|r| r.contains("chain_")),
        "a dry run changes nothing"
    );

    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    // The controller's order, shown as the rollout starts, before any step.
    let shown: Vec<&str> = out
        .stdout
        .lines()
        .take_while(|l| !l.starts_with("rollout "))
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        shown, order,
        "the live run shows the dry run's order:\n{out}"
    );
    assert!(
        out.stdout.contains("  apply 4/4\n"),
        "progress is reported:\n{out}"
    );
    let report: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "BATCH DEPLOYMENT REPORT")
        .collect();
    assert_eq!(report[2], "Batch: sprint1 (4 routines)");
    assert_eq!(report[3], "Environment: DEV");
    assert_eq!(report[4], "Mode: all-or-nothing");
    for (line, name) in
        report[5..9]
            .iter()
            .zip(["chain_a()", "chain_b()", "chain_c()", "chain_d(integer)"])
    {
        assert!(
            line.contains(&format!("public.{name}")) && line.contains("[ok] deployed"),
            "{line}"
        );
    }
    assert!(report[9].starts_with("Backup: "), "{}", report[9]);
    assert_eq!(
        report[10],
        "Result: 4 deployed, 0 unchanged, 0 failed, 0 skipped, 0 rolled back, 0 not run"
    );
    assert_eq!(report[12], "Status: [ok] SUCCESS");
    let total: i32 = client
        .query_one("SELECT public.chain_d(1)", &[])
        .await?
        .get(0);
    assert_eq!(total, 20 + 2 + 1);
    Ok(())
}

#[tokio::test]
async fn every_problem_in_the_list_is_reported_before_anything_changes() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    write_chain(&stack).await?;
    let list = write_list(
        &stack,
        "bad.txt",
        "chain_a\nchian_b\nreconcilemupstream\nnosuchthing\n",
    )?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("2 problem(s)"), "{out}");
    assert!(
        out.stderr.contains("bad.txt:2: ") && out.stderr.contains("chian_b"),
        "{out}"
    );
    assert!(
        out.stderr.contains("bad.txt:4: ") && out.stderr.contains("nosuchthing"),
        "{out}"
    );
    let client = stack.zone("dev").pg.connect().await?;
    assert!(!catalog(&client)
        .await?
        .iter()
        .any(|r| r.contains("chain_a")));
    Ok(())
}

#[tokio::test]
async fn a_cycle_is_reported_with_its_path() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure(
        "cyc_x.sql",
        "CREATE FUNCTION public.cyc_x() RETURNS integer LANGUAGE sql AS 'SELECT public.cyc_y()';",
    )?;
    stack.write_procedure(
        "cyc_y.sql",
        "CREATE FUNCTION public.cyc_y() RETURNS integer LANGUAGE sql AS 'SELECT public.cyc_x()';",
    )?;
    let list = write_list(&stack, "cycle.txt", "cyc_y\ncyc_x\n")?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("cycle"), "{out}");
    assert!(
        out.stderr.contains("public.cyc_x()") && out.stderr.contains("public.cyc_y()"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn an_atomic_batch_with_one_broken_routine_leaves_the_database_exactly_as_before(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    write_chain(&stack).await?;
    // Parses fine, fails at CREATE: its body reads a table that does not exist.
    stack.write_procedure(
        "chain_c.sql",
        "CREATE OR REPLACE FUNCTION public.chain_c() RETURNS integer LANGUAGE sql AS 'SELECT public.chain_b() * count(*)::integer FROM public.no_such_table';",
    )?;
    let client = stack.zone("dev").pg.connect().await?;
    // One routine exists already, so "as before" includes a changed one.
    client
        .batch_execute(
            "CREATE FUNCTION public.chain_a() RETURNS integer LANGUAGE sql AS 'SELECT 0'",
        )
        .await?;
    let before = catalog(&client).await?;

    let list = write_list(&stack, "sprint.txt", "chain_d\nchain_c\nchain_b\nchain_a\n")?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("applying public.chain_c() from procedures/chain_c.sql failed"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("relation \"public.no_such_table\" does not exist"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("(routine 3 of 4); nothing was committed"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "Result: 0 deployed, 0 unchanged, 1 failed, 0 skipped, 2 rolled back, 1 not run"
        ),
        "{out}"
    );
    assert_eq!(
        catalog(&client).await?,
        before,
        "the catalog is exactly as before"
    );
    Ok(())
}

#[tokio::test]
async fn continue_on_error_deploys_the_good_skips_the_broken_and_its_dependants() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    write_chain(&stack).await?;
    stack.write_procedure(
        "chain_c.sql",
        "CREATE OR REPLACE FUNCTION public.chain_c() RETURNS integer LANGUAGE sql AS 'SELECT public.chain_b() * count(*)::integer FROM public.no_such_table';",
    )?;
    stack.write_procedure(
        "loner.sql",
        "CREATE FUNCTION public.loner() RETURNS text LANGUAGE sql AS 'SELECT ''ok''';",
    )?;
    let list = write_list(
        &stack,
        "sprint.txt",
        "chain_d\nloner\nchain_c\nchain_b\nchain_a\n",
    )?;
    let out = stack
        .cli(&["batch", "dev", &list, "--continue-on-error"])
        .await?;
    assert_eq!(out.code, 2, "the worst outcome of the batch: {out}");
    let report: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "BATCH DEPLOYMENT REPORT")
        .collect();
    assert_eq!(report[4], "Mode: continue-on-error");
    let line_of = |name: &str| {
        report
            .iter()
            .find(|l| l.contains(name))
            .copied()
            .unwrap_or_default()
    };
    assert!(
        line_of("public.chain_a()").contains("[ok] deployed"),
        "{out}"
    );
    assert!(
        line_of("public.chain_b()").contains("[ok] deployed"),
        "{out}"
    );
    assert!(line_of("public.loner()").contains("[ok] deployed"), "{out}");
    assert!(
        line_of("public.chain_c()").contains("[FAIL] failed"),
        "{out}"
    );
    assert!(
        line_of("public.chain_c()").contains("no_such_table"),
        "{out}"
    );
    assert!(
        line_of("public.chain_d(integer)").contains("[-] skipped"),
        "{out}"
    );
    assert!(
        line_of("public.chain_d(integer)").contains("depends on public.chain_c(), which failed"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "Result: 3 deployed, 0 unchanged, 1 failed, 1 skipped, 0 rolled back, 0 not run"
        ),
        "{out}"
    );

    // The controller keeps the summary for `status` and `rollouts`.
    let rollout = report
        .iter()
        .find_map(|l| l.strip_prefix("Rollout: "))
        .unwrap_or_default();
    let status = stack.cli(&["status", rollout]).await?;
    assert_eq!(status.code, 0, "{status}");
    for expected in [
        "State: failed",
        "Procedure: sprint (5 routines)",
        "Requested By: test-operator",
        "Finished: ",
        "[FAIL] failed       public.chain_c()",
        "[-] skipped      public.chain_d(integer)  depends on public.chain_c(), which failed",
        "[ok] deployed     public.loner()",
    ] {
        assert!(
            status.stdout.contains(expected),
            "missing {expected:?} in:\n{status}"
        );
    }
    let listed = stack
        .cli(&["rollouts", "--env", "dev", "--state", "failed"])
        .await?;
    assert_eq!(listed.code, 0, "{listed}");
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with(rollout) && l.contains("sprint")),
        "{listed}"
    );
    let unknown = stack.cli(&["status", "r-nope"]).await?;
    assert_eq!(unknown.code, 1, "{unknown}");
    let client = stack.zone("dev").pg.connect().await?;
    let live: Vec<String> = catalog(&client)
        .await?
        .into_iter()
        .filter(|r| r.contains("chain_") || r.contains("loner"))
        .collect();
    assert_eq!(live.len(), 3, "{live:?}");
    let ledger: i64 = client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0);
    assert_eq!(ledger, 3, "one ledger row per deployed routine");
    Ok(())
}

/// A function `public.<name>()` with `body` in PL/pgSQL and a smoke test
/// calling `call`.
fn write_smoked(stack: &Stack, name: &str, body: &str, call: &str) -> Result<()> {
    stack.write_procedure(
        &format!("{name}.sql"),
        &format!(
            "CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE plpgsql AS $$\nBEGIN\n  {body}\n  RETURN 1;\nEND\n$$;"
        ),
    )?;
    stack.write_procedure(
        &format!("{name}.toml"),
        &format!("[[smoke_tests]]\nname = \"answers\"\ncall = \"{call}\"\n"),
    )
}

/// Each failed SMOKE TEST block of a batch's output: its routine, and its
/// text up to the next block.
fn failed_smoke_blocks(stdout: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(header) = line.strip_prefix("SMOKE TEST: ") {
            let routine = header.split(' ').next().unwrap_or_default();
            blocks.push((routine.to_owned(), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    blocks
}

fn routines_of(blocks: &[(String, String)]) -> Vec<&str> {
    blocks.iter().map(|(routine, _)| routine.as_str()).collect()
}

/// The smoke calls of a batch go out pipelined; each verdict must still be
/// its own routine's — a call that fails to run, one that fails to even
/// prepare, and (through the one-by-one rerun a notice triggers) a warning.
#[tokio::test]
async fn pipelined_smoke_verdicts_belong_to_their_own_routines() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    for name in ["sm_a", "sm_c", "sm_e"] {
        write_smoked(&stack, name, "NULL;", &format!("SELECT public.{name}()"))?;
    }
    write_smoked(
        &stack,
        "sm_b",
        "RAISE EXCEPTION 'sm_b is broken';",
        "SELECT public.sm_b()",
    )?;
    write_smoked(
        &stack,
        "sm_d",
        "NULL;",
        "SELECT public.sm_no_such_function()",
    )?;
    let list = write_list(&stack, "smoked.txt", "sm_e\nsm_d\nsm_c\nsm_b\nsm_a\n")?;
    let client = stack.zone("dev").pg.connect().await?;
    let before = catalog(&client).await?;

    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 3, "{out}");
    let blocks = failed_smoke_blocks(&out.stdout);
    assert_eq!(
        routines_of(&blocks),
        ["public.sm_b()", "public.sm_d()"],
        "{out}"
    );
    assert!(blocks[0].1.contains("ERROR P0001: sm_b is broken"), "{out}");
    assert!(
        blocks[1]
            .1
            .contains("public.sm_no_such_function() does not exist"),
        "{out}"
    );
    assert_eq!(catalog(&client).await?, before, "nothing was committed");

    // Fixed, and one that raises a WARNING: the notice sends the calls
    // through one by one, and only its own routine fails.
    write_smoked(&stack, "sm_b", "NULL;", "SELECT public.sm_b()")?;
    write_smoked(
        &stack,
        "sm_d",
        "RAISE WARNING 'sm_d is degraded';",
        "SELECT public.sm_d()",
    )?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 3, "{out}");
    let blocks = failed_smoke_blocks(&out.stdout);
    assert_eq!(routines_of(&blocks), ["public.sm_d()"], "{out}");
    assert!(
        blocks[0].1.contains("WARNING raised: sm_d is degraded"),
        "{out}"
    );
    assert_eq!(catalog(&client).await?, before, "nothing was committed");

    write_smoked(&stack, "sm_d", "NULL;", "SELECT public.sm_d()")?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

/// A batch that waits shows its order when it starts: the submitter of a
/// scheduled one is told so, and an approver who follows one sees the order
/// the controller computed, before the first step.
#[tokio::test]
async fn a_batch_that_waits_shows_its_order_when_it_starts() -> Result<()> {
    let closed = window_from_now(12 * 60, 1)?;
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{closed}\""))],
        ..StackOptions::default()
    })
    .await?;
    write_chain(&stack).await?;
    let list = write_list(&stack, "later.txt", "chain_c\nchain_a\nchain_b\n")?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("scheduled: request p-"), "{out}");
    assert!(
        out.stdout
            .contains("the deploy order is shown when the batch starts; `--dry-run` prints it now"),
        "{out}"
    );
    let client = stack.zone("dev").pg.connect().await?;
    assert!(
        !catalog(&client).await?.iter().any(|r| r.contains("chain_")),
        "a scheduled batch changes nothing before its window"
    );

    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![(
            "dev".into(),
            "require_approval = true\napprovals = 1".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    write_chain(&stack).await?;
    let list = write_list(&stack, "approved.txt", "chain_c\nchain_a\nchain_b\n")?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(
        out.code, 5,
        "awaiting approval has its own exit code: {out}"
    );
    assert!(out.stderr.contains("awaits approval"), "{out}");
    let request = out.request_id()?;
    let approved = stack
        .cli_as("approver-1", &["approve", &request, "--follow"])
        .await?;
    assert_eq!(approved.code, 0, "{approved}");
    let shown: Vec<&str> = approved
        .stdout
        .lines()
        .skip_while(|l| *l != "deploy order:")
        .take_while(|l| !l.starts_with("rollout "))
        .collect();
    assert_eq!(shown.len(), 4, "{approved}");
    for (line, name) in shown[1..]
        .iter()
        .zip(["chain_a()", "chain_b()", "chain_c()"])
    {
        assert!(
            line.contains(&format!("public.{name}")),
            "{line}:\n{approved}"
        );
    }
    assert!(
        shown[3].contains("after public.chain_b() (called from its SQL body)"),
        "{approved}"
    );
    Ok(())
}

/// The routines of a batch that declare the same grants share one GRANT
/// statement per grant (issue 15 item 9); each routine's ACL must still be
/// exactly what its own grants, one by one in its own order, leave: the
/// same entries in the same order as on a routine granted by hand.
#[tokio::test]
async fn routines_sharing_their_grants_get_exactly_the_acl_their_grants_one_by_one_give(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE ROLE grant_reader; CREATE ROLE grant_writer;
             CREATE FUNCTION public.by_hand_ab() RETURNS integer LANGUAGE sql AS 'SELECT 0';
             GRANT EXECUTE ON FUNCTION public.by_hand_ab() TO grant_reader;
             GRANT EXECUTE ON FUNCTION public.by_hand_ab() TO grant_writer;
             CREATE FUNCTION public.by_hand_ba() RETURNS integer LANGUAGE sql AS 'SELECT 0';
             GRANT EXECUTE ON FUNCTION public.by_hand_ba() TO grant_writer;
             GRANT EXECUTE ON FUNCTION public.by_hand_ba() TO grant_reader;",
        )
        .await?;
    let reader_then_writer = "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"grant_reader\"]\n\
                              [[grants]]\nprivilege = \"EXECUTE\"\nto = [\"grant_writer\"]\n";
    let writer_then_reader = "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"grant_writer\"]\n\
                              [[grants]]\nprivilege = \"EXECUTE\"\nto = [\"grant_reader\"]\n";
    for (name, grants) in [
        ("shared_one", reader_then_writer),
        ("alone", writer_then_reader),
        ("shared_two", reader_then_writer),
        ("ungranted", ""),
    ] {
        stack.write_procedure(
            &format!("{name}.sql"),
            &format!("CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE sql AS 'SELECT 1';"),
        )?;
        if !grants.is_empty() {
            stack.write_procedure(&format!("{name}.toml"), grants)?;
        }
    }
    let list = write_list(
        &stack,
        "grants.txt",
        "shared_one\nalone\nshared_two\nungranted\n",
    )?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("6 grant(s) applied"), "{out}");

    let acl = |name: &'static str| {
        let client = &client;
        async move {
            let acl: Option<String> = client
                .query_one(
                    &format!("SELECT proacl::text FROM pg_proc WHERE oid = 'public.{name}()'::regprocedure"),
                    &[],
                )
                .await?
                .get(0);
            anyhow::Ok(acl)
        }
    };
    let (ab, ba) = (acl("by_hand_ab").await?, acl("by_hand_ba").await?);
    assert_ne!(ab, ba, "the order of grants shows in the ACL");
    assert_eq!(acl("shared_one").await?, ab);
    assert_eq!(acl("shared_two").await?, ab);
    assert_eq!(acl("alone").await?, ba);
    assert_eq!(acl("ungranted").await?, None, "no grant, the default ACL");
    Ok(())
}
