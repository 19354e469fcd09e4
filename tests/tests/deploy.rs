//! `pgrollout deploy` end to end: real clusters, the real controller and
//! agent, checked the way an operator would check — the catalog, the ledger,
//! the backup file, the printed report and the exit code.

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;
use sha2::{Digest, Sha256};

async fn live_definition(client: &Client, signature: &str) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "SELECT pg_get_functiondef(to_regprocedure($1))",
            &[&signature],
        )
        .await?
        .get(0))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `Backup: <path> (sha256 <hex>)` line of the DEPLOYMENT LOG.
fn backup_of(stdout: &str) -> Result<(String, String)> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backup: "))
        .context("no Backup line in the report")?;
    let (path, rest) = line
        .split_once(" (sha256 ")
        .context("backup line has no sha256")?;
    Ok((path.to_owned(), rest.trim_end_matches(')').to_owned()))
}

#[tokio::test]
async fn a_new_then_changed_function_deploys_with_backup_ledger_and_grants() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let signature = "public.reconcilemupstream(text)";
    assert_eq!(live_definition(&client, signature).await?, None);

    let first = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(first.code, 0, "{first}");
    for expected in [
        "DEPLOYMENT LOG",
        "Procedure: reconcilemupstream",
        "Routines: public.reconcilemupstream(text) [created]",
        "Environment: DEV",
        "Deployed By: test-operator",
        "Smoke Test: [ok] PASS",
        "Status: [ok] SUCCESS",
        "[ok] Returns correct structure: returns (upstream_uid text, depth int4)",
    ] {
        assert!(
            first.stdout.contains(expected),
            "missing {expected:?} in:\n{first}"
        );
    }
    let v1 = live_definition(&client, signature)
        .await?
        .context("created")?;
    let acl: String = client
        .query_one(
            "SELECT proacl::text FROM pg_proc WHERE oid = to_regprocedure($1)",
            &[&signature],
        )
        .await?
        .get(0);
    assert!(acl.contains("perseus_app=X/"), "grant applied: {acl}");

    // A changed body: the backup must hold v1, the ledger both versions.
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    let source = std::fs::read_to_string(&path)?;
    std::fs::write(
        &path,
        source.replace("BEGIN\n", "BEGIN\n  -- v2: same contract, new comment\n"),
    )?;
    let second = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    assert!(
        second
            .stdout
            .contains("public.reconcilemupstream(text) [replaced]"),
        "{second}"
    );
    let v2 = live_definition(&client, signature)
        .await?
        .context("still there")?;
    assert!(v2.contains("-- v2: same contract"), "{v2}");

    let (backup_path, backup_sha) = backup_of(&second.stdout)?;
    let backup = std::fs::read(&backup_path).with_context(|| format!("reading {backup_path}"))?;
    assert_eq!(
        sha256_hex(&backup),
        backup_sha,
        "reported SHA-256 matches the file"
    );
    let backup_text = String::from_utf8(backup)?;
    assert!(
        backup_text.contains(&v1),
        "backup holds the previous definition byte for byte"
    );
    assert!(
        backup_text.contains(&sha256_hex(v1.as_bytes())),
        "manifest records v1's SHA-256"
    );

    let ledger = client
        .query(
            "SELECT change, action, actor, previous_definition, previous_sha256, new_definition, backup_path, trace_id \
             FROM pgrollout.ledger WHERE identity = 'public.reconcilemupstream(text)' ORDER BY id",
            &[],
        )
        .await?;
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[0].get::<_, &str>("change"), "created");
    assert_eq!(ledger[1].get::<_, &str>("change"), "replaced");
    assert_eq!(ledger[1].get::<_, &str>("action"), "deploy");
    assert_eq!(ledger[1].get::<_, &str>("actor"), "test-operator");
    assert_eq!(
        ledger[1].get::<_, Option<&str>>("previous_definition"),
        Some(v1.as_str())
    );
    assert_eq!(
        ledger[1].get::<_, Option<String>>("previous_sha256"),
        Some(sha256_hex(v1.as_bytes()))
    );
    assert_eq!(
        ledger[1].get::<_, Option<&str>>("new_definition"),
        Some(v2.as_str())
    );
    assert_eq!(
        ledger[1].get::<_, Option<&str>>("backup_path"),
        Some(backup_path.as_str())
    );
    let trace_id: String = ledger[1].get("trace_id");
    assert!(
        second.stdout.contains(&format!("Trace ID: {trace_id}")),
        "{second}"
    );

    // The database password appears in no output of any process.
    let password = stack.zone("dev").pg.password();
    for text in [
        &first.stdout,
        &first.stderr,
        &second.stdout,
        &second.stderr,
        &stack.all_process_output(),
    ] {
        assert!(!text.contains(password), "password leaked");
    }
    Ok(())
}

#[tokio::test]
async fn overloads_deploy_together_and_a_redeploy_of_the_same_plan_is_unchanged() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("public.addarc(text, text, timestamp with time zone) [created], public.addarc(text, text) [created]"), "{out}");
    let again = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again
            .stdout
            .contains("public.addarc(text, text) [unchanged]"),
        "{again}"
    );
    let client = stack.zone("dev").pg.connect().await?;
    let overloads: i64 = client
        .query_one("SELECT count(*) FROM pg_proc WHERE proname = 'addarc'", &[])
        .await?
        .get(0);
    assert_eq!(overloads, 2);
    Ok(())
}

#[tokio::test]
async fn a_syntax_error_is_refused_with_its_line_and_nothing_runs() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure(
        "broken.sql",
        "-- a routine with a typo\nCREATE FUNCTION public.broken(a integer) RETURNS integer\nLANGUAGE sql AS 'select 1'\nSTRICTT;\n",
    )?;
    let out = stack.cli(&["deploy", "broken", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("procedures/broken.sql:4"),
        "names file and line: {out}"
    );
    assert!(
        out.stderr.contains("syntax error at or near \"STRICTT\""),
        "{out}"
    );

    // The whole project must parse, so the broken file goes before the next case.
    std::fs::remove_file(stack.project.join("procedures/broken.sql"))?;
    stack.write_procedure(
        "brokenbody.sql",
        "CREATE FUNCTION public.brokenbody() RETURNS integer LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1\nEND\n$$;\n",
    )?;
    let out = stack.cli(&["deploy", "brokenbody", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("procedures/brokenbody.sql:4"),
        "the body error names its line in the file: {out}"
    );

    let client = stack.zone("dev").pg.connect().await?;
    let touched: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('broken', 'brokenbody')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(touched, 0, "nothing created");
    let ledger: Option<String> = client
        .query_one("SELECT to_regclass('pgrollout.ledger')::text", &[])
        .await?
        .get(0);
    assert_eq!(ledger, None, "the agent was never asked to do anything");
    Ok(())
}

#[tokio::test]
async fn unknown_procedure_or_environment_is_a_validation_failure() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let out = stack.cli(&["deploy", "reconcilemupstrem", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("reconcilemupstrem"), "{out}");
    assert!(
        out.stderr.contains("reconcilemupstream"),
        "suggests the near name: {out}"
    );

    let out = stack
        .cli(&["deploy", "reconcilemupstream", "staging"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("unknown environment \"staging\"; known environments: dev"),
        "{out}"
    );

    let out = stack.cli(&["deploy"]).await?;
    assert_eq!(
        out.code, 1,
        "a usage error is a validation failure too: {out}"
    );
    Ok(())
}

#[tokio::test]
async fn backups_older_than_the_environments_retention_are_pruned_after_a_deploy() -> Result<()> {
    let stack = pgrollout_tests::Stack::start_with(pgrollout_tests::StackOptions {
        environment_extra: vec![("dev".into(), "backup_retention_days = 7".into())],
        ..Default::default()
    })
    .await?;
    let first = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(first.code, 0, "{first}");
    let (old_backup, _) = backup_of(&first.stdout)?;
    // Eight days pass for that file.
    let eight_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old_backup)?
        .set_modified(eight_days_ago)?;

    // A change, so that the second deploy writes a backup (an unchanged
    // routine needs none, and retention runs after a backup is written).
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    let source = std::fs::read_to_string(&path)?;
    std::fs::write(&path, source.replace("BEGIN\n", "BEGIN\n  -- v2\n"))?;
    let second = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    assert!(second.stdout.contains("[ok] retention"), "{second}");
    assert!(
        second
            .stdout
            .contains("1 backup(s) older than 7 day(s) removed"),
        "{second}"
    );
    let (new_backup, _) = backup_of(&second.stdout)?;
    assert!(
        !std::path::Path::new(&old_backup).exists(),
        "the expired backup is gone"
    );
    assert!(
        std::path::Path::new(&new_backup).exists(),
        "the new backup is kept"
    );
    Ok(())
}
