//! Rollback, emergency rollback, disable and enable, history (issue 6), on
//! real clusters with the real binaries over mutual TLS. "Exactly" means
//! `pg_get_functiondef`, `proowner`, `proacl` and the comment byte for byte.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::stack::OPERATOR;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{CommandOutput, Stack, StackOptions};

const SIGNATURE: &str = "public.secure_total(integer)";

/// Everything a restore must bring back, as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exact {
    definition: String,
    owner: String,
    acl: Option<String>,
    comment: Option<String>,
}

async fn exact(client: &Client, signature: &str) -> Result<Option<Exact>> {
    Ok(client
        .query_opt(
            "SELECT pg_get_functiondef(p.oid), p.proowner::regrole::text, p.proacl::text, \
             obj_description(p.oid, 'pg_proc') FROM pg_proc p WHERE p.oid = to_regprocedure($1)",
            &[&signature],
        )
        .await?
        .map(|row| Exact {
            definition: row.get(0),
            owner: row.get(1),
            acl: row.get(2),
            comment: row.get(3),
        }))
}

/// A routine as a careful DBA leaves it: SECURITY DEFINER with its own
/// search_path, owned by a non-superuser, PUBLIC's EXECUTE revoked, granted
/// to two roles (one WITH GRANT OPTION, who granted on to a third), and a
/// comment with quotes and a backslash.
const HAND_MADE: &str = r#"
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE app_extra NOLOGIN;
CREATE ROLE app_audit NOLOGIN;
CREATE FUNCTION public.secure_total(p integer) RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
  AS $$ SELECT p * 2 $$;
ALTER FUNCTION public.secure_total(integer) OWNER TO app_owner;
REVOKE ALL ON FUNCTION public.secure_total(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.secure_total(integer) TO perseus_app;
GRANT EXECUTE ON FUNCTION public.secure_total(integer) TO perseus_report WITH GRANT OPTION;
SET ROLE perseus_report;
GRANT EXECUTE ON FUNCTION public.secure_total(integer) TO app_audit;
RESET ROLE;
COMMENT ON FUNCTION public.secure_total(integer) IS 'doubles it; "it''s" exact \n';
"#;

/// The project's version: another body, no SECURITY DEFINER, no
/// search_path, and a sidecar that grants to a role the original did not.
fn project_version(body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.secure_total(p integer) RETURNS integer\nLANGUAGE sql\nAS $$ {body} $$;\n"
    )
}

const SIDECAR: &str = "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"perseus_app\", \"app_extra\"]\n\n\
    [[smoke_tests]]\nname = \"computes\"\ncall = \"SELECT public.secure_total(2)\"\nmax_duration = \"2s\"\n\
    expect_columns = [ { name = \"secure_total\", type = \"integer\" } ]\n";

async fn ledger(client: &Client, identity: &str) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT l.action || ':' || l.change || coalesce(':' || (to_jsonb(l) ->> 'undoes_ledger_id'), '') \
             FROM pgrollout.ledger l WHERE l.identity = $1 ORDER BY l.id",
            &[&identity],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

async fn ledger_ids(client: &Client, identity: &str, action: &str) -> Result<Vec<i64>> {
    Ok(client
        .query(
            "SELECT id FROM pgrollout.ledger WHERE identity = $1 AND action = $2 ORDER BY id",
            &[&identity, &action],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

fn rollout_id(out: &CommandOutput) -> Result<String> {
    out.stdout
        .lines()
        .find_map(|line| line.strip_prefix("rollout ")?.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no rollout id in:\n{out}"))
}

#[tokio::test]
async fn a_rollback_restores_definition_owner_acl_and_comment_byte_for_byte() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute(HAND_MADE).await?;
    let before = exact(&client, SIGNATURE).await?.context("hand-made")?;
    assert!(
        before
            .acl
            .as_deref()
            .is_some_and(|acl| acl.contains("app_audit=X/perseus_report")),
        "a grantor other than the owner: {before:?}"
    );

    stack.write_procedure("secure_total.sql", &project_version("SELECT p * 3"))?;
    stack.write_procedure("secure_total.toml", SIDECAR)?;
    let out = stack.cli(&["deploy", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let deployed = exact(&client, SIGNATURE).await?.context("deployed")?;
    assert_ne!(deployed.definition, before.definition);
    assert!(
        deployed
            .acl
            .as_deref()
            .is_some_and(|acl| acl.contains("app_extra=X/app_owner")),
        "{deployed:?}"
    );
    // Changed by hand after the deploy: the rollback restores the recorded
    // state regardless, and says so.
    client
        .batch_execute(
            "COMMENT ON FUNCTION public.secure_total(integer) IS 'edited by hand'; \
             ALTER FUNCTION public.secure_total(integer) OWNER TO perseus_app",
        )
        .await?;

    let out = stack.cli(&["rollback", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        exact(&client, SIGNATURE).await?,
        Some(before.clone()),
        "{out}"
    );
    for expected in [
        "[ok] restore",
        "secure_total(integer) from backup ",
        "[ok] exact-state",
        "definition, owner, ACL and comment as recorded, byte for byte",
        "[ok] post-restore-smoke",
        "ROLLBACK LOG",
        "Routines: public.secure_total(integer) [restored from backup ",
        "Mode: normal",
        "Status: [ok] SUCCESS",
        "warning: public.secure_total(integer): owner, ACL, comment changed outside pgrollout since ledger #",
    ] {
        assert!(
            out.stdout.contains(expected),
            "expected {expected:?} in:\n{out}"
        );
    }
    let deploy_id = ledger_ids(&client, "public.secure_total(integer)", "deploy").await?[0];
    assert_eq!(
        ledger(&client, "public.secure_total(integer)").await?,
        [
            "deploy:replaced".to_owned(),
            format!("rollback:restored:{deploy_id}")
        ]
    );

    // Nothing left to undo: refused, nothing changed.
    let out = stack.cli(&["rollback", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("nothing to roll back"), "{out}");
    assert_eq!(exact(&client, SIGNATURE).await?, Some(before));
    Ok(())
}

#[tokio::test]
async fn rolling_back_walks_versions_back_drops_new_routines_and_undoes_whole_rollouts(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let two = "public.addarc(text, text)";
    let three = "public.addarc(text, text, timestamp with time zone)";
    assert_eq!(
        stack
            .cli(&["deploy", "reconcilemupstream", "dev"])
            .await?
            .code,
        0
    );
    assert_eq!(stack.cli(&["deploy", "addarc", "dev"]).await?.code, 0);
    let v1 = (exact(&client, two).await?, exact(&client, three).await?);
    assert!(v1.0.is_some() && v1.1.is_some());
    let source = std::fs::read_to_string(stack.project.join("procedures/addarc.sql"))?;
    stack.write_procedure("addarc.sql", &source.replace("BEGIN\n", "BEGIN\n  -- v2\n"))?;
    assert_eq!(stack.cli(&["deploy", "addarc", "dev"]).await?.code, 0);
    assert_ne!(exact(&client, two).await?, v1.0);

    // Both overloads go back to v1, in one transaction.
    let out = stack.cli(&["rollback", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        (exact(&client, two).await?, exact(&client, three).await?),
        v1.clone()
    );
    assert!(
        out.stdout
            .contains("SMOKE TEST: public.addarc(text, text) @ DEV (post-restore)"),
        "{out}"
    );

    // One further back: before v1 they did not exist, so they are dropped.
    let out = stack.cli(&["rollback", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        (exact(&client, two).await?, exact(&client, three).await?),
        (None, None)
    );
    assert!(
        out.stdout
            .contains("addarc(text,text) [dropped from backup "),
        "{out}"
    );

    // A whole rollout, by id: created again, then undone as a whole.
    let out = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let rollout = rollout_id(&out)?;
    let out = stack.cli(&["rollback", "--rollout", &rollout]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        (exact(&client, two).await?, exact(&client, three).await?),
        (None, None)
    );
    let audit = stack.cli(&["audit", "--rollout", &rollout]).await?;
    assert!(audit.stdout.contains("rollout.rolled_back"), "{audit}");
    let out = stack.cli(&["rollback", "--rollout", &rollout]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("already rolled back"), "{out}");
    Ok(())
}

/// The routine in `procedures/probe.sql`, plpgsql, with a marker comment.
fn probe(marker: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.probe(p integer)\nRETURNS integer\nLANGUAGE plpgsql AS $$\nBEGIN\n  -- {marker}\n  RETURN p;\nEND\n$$;\n"
    )
}

async fn last_backup(client: &Client, identity: &str) -> Result<String> {
    Ok(client
        .query_one(
            "SELECT backup_path FROM pgrollout.ledger WHERE identity = $1 AND action = 'deploy' ORDER BY id DESC LIMIT 1",
            &[&identity],
        )
        .await?
        .get(0))
}

/// Changes one byte of the definition `marker` labels in a backup file.
fn corrupt(path: &str, marker: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    let at = text
        .rfind(marker)
        .with_context(|| format!("{marker} not in {path}"))?;
    let mut bytes = text.into_bytes();
    bytes[at] = b'#';
    std::fs::write(path, bytes)?;
    Ok(())
}

#[tokio::test]
async fn a_corrupt_backup_is_detected_and_the_next_source_is_used_with_a_warning() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute(&probe("v0 by hand")).await?;
    client
        .batch_execute("COMMENT ON FUNCTION public.probe(integer) IS 'v0'")
        .await?;
    let v0 = exact(&client, "public.probe(integer)").await?;
    stack.write_procedure("probe.sql", &probe("v1"))?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let v1 = exact(&client, "public.probe(integer)").await?;
    let backup_of_v0 = last_backup(&client, "public.probe(integer)").await?;
    stack.write_procedure("probe.sql", &probe("v2"))?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let backup_of_v1 = last_backup(&client, "public.probe(integer)").await?;

    // v1 was deployed by pgrollout: the controller holds its plan.
    corrupt(&backup_of_v1, "-- v1")?;
    let out = stack.cli(&["rollback", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(exact(&client, "public.probe(integer)").await?, v1);
    assert!(
        out.stdout
            .contains("warning: public.probe(integer): backup unusable: backup "),
        "{out}"
    );
    assert!(out.stdout.contains("is corrupt: SHA-256 of"), "{out}");
    assert!(
        out.stdout.contains("falling back to the next source"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("probe(integer) [restored from controller plan "),
        "{out}"
    );

    // v0 was made by hand: no plan anywhere, so the ledger it is.
    corrupt(&backup_of_v0, "-- v0")?;
    let out = stack.cli(&["rollback", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(exact(&client, "public.probe(integer)").await?, v0);
    assert!(out.stdout.contains("is corrupt"), "{out}");
    assert!(
        out.stdout
            .contains("probe(integer) [restored from ledger #"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn the_automatic_rollback_after_a_failing_post_commit_smoke_test_is_exact_and_exits_3(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute(HAND_MADE).await?;
    let before = exact(&client, SIGNATURE).await?;
    // Passes on the deploy's connection (it holds the deploy's advisory
    // lock), fails on the fresh post-commit connection, which does not.
    stack.write_procedure(
        "secure_total.sql",
        "CREATE OR REPLACE FUNCTION public.secure_total(p integer) RETURNS integer\nLANGUAGE plpgsql AS $$\nBEGIN\n  \
         IF NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) \
         THEN RAISE EXCEPTION 'fails outside the deploy'; END IF;\n  \
         RETURN p * 3;\nEND\n$$;\n",
    )?;
    stack.write_procedure("secure_total.toml", SIDECAR)?;
    let out = stack.cli(&["deploy", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("[ok] commit"), "{out}");
    assert!(out.stdout.contains("[FAIL] post-commit-smoke"), "{out}");
    assert!(out.stdout.contains("[ok] auto-rollback"), "{out}");
    assert!(
        out.stdout
            .contains("restored exactly (definition, owner, ACL, comment)"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("the post-commit smoke test failed; automatic rollback restored the backup"),
        "{out}"
    );
    assert_eq!(
        exact(&client, SIGNATURE).await?,
        before,
        "the old version is live, exactly"
    );
    // The automatic rollback backs up too, under its own name: the deploy's
    // backup still holds what the ledger says it holds.
    let (path, recorded): (String, String) = client
        .query_one(
            "SELECT backup_path, backup_sha256 FROM pgrollout.ledger WHERE action = 'deploy'",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))?;
    use sha2::Digest;
    let actual = hex::encode(sha2::Sha256::digest(std::fs::read(&path)?));
    assert_eq!(actual, recorded, "{path} was overwritten");
    let own: String = client
        .query_one(
            "SELECT backup_path FROM pgrollout.ledger WHERE action = 'auto-rollback'",
            &[],
        )
        .await?
        .get(0);
    assert!(own.ends_with("_auto-rollback.sql") && own != path, "{own}");
    let deploy_id = ledger_ids(&client, "public.secure_total(integer)", "deploy").await?[0];
    assert_eq!(
        ledger(&client, "public.secure_total(integer)").await?,
        [
            "deploy:replaced".to_owned(),
            format!("auto-rollback:restored:{deploy_id}")
        ]
    );
    Ok(())
}

#[tokio::test]
async fn disable_then_enable_returns_the_routine_exactly_in_both_modes() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute(HAND_MADE).await?;
    let before = exact(&client, SIGNATURE).await?.context("hand-made")?;

    let started = Instant::now();
    let out = stack.cli(&["disable", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "SEED.md: under 30 seconds"
    );
    assert_eq!(
        exact(&client, SIGNATURE).await?,
        None,
        "renamed away: {out}"
    );
    let disabled: String = client
        .query_one(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname LIKE 'secure_total_disabled_%'",
            &[],
        )
        .await?
        .get(0);
    let today: String = client
        .query_one("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')", &[])
        .await?
        .get(0);
    assert_eq!(disabled, format!("secure_total_disabled_{today}(integer)"));
    assert!(
        out.stdout
            .contains(&format!("renamed to secure_total_disabled_{today}")),
        "{out}"
    );

    let out = stack.cli(&["rollback", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 1, "a disabled routine is enabled first: {out}");
    assert!(out.stderr.contains("is disabled"), "{out}");

    let out = stack.cli(&["enable", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(exact(&client, SIGNATURE).await?, Some(before.clone()));

    let out = stack
        .cli(&["disable", "secure_total", "dev", "--revoke"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let revoked = exact(&client, SIGNATURE).await?.context("still there")?;
    assert_eq!(revoked.acl.as_deref(), Some("{}"), "nobody may execute it");
    assert_eq!(revoked.definition, before.definition);

    let out = stack.cli(&["enable", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(exact(&client, SIGNATURE).await?, Some(before));
    let out = stack.cli(&["enable", "secure_total", "dev"]).await?;
    assert_eq!(out.code, 1, "nothing left to enable: {out}");

    assert_eq!(
        ledger(&client, "public.secure_total(integer)").await?,
        ledger_ids(&client, "public.secure_total(integer)", "disable")
            .await?
            .iter()
            .zip(["renamed", "revoked"])
            .flat_map(|(id, change)| [
                format!("disable:{change}"),
                format!(
                    "enable:{}:{id}",
                    if change == "renamed" {
                        "renamed-back"
                    } else {
                        "re-granted"
                    }
                )
            ])
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn an_emergency_rollback_needs_a_reason_skips_smoke_and_is_audited() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    stack.write_procedure("probe.sql", &probe("v1"))?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let v1 = exact(&client, "public.probe(integer)").await?;
    stack.write_procedure("probe.sql", &probe("v2"))?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);

    let out = stack
        .cli(&["rollback", "probe", "dev", "--emergency"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("--reason"), "{out}");
    assert_ne!(
        exact(&client, "public.probe(integer)").await?,
        v1,
        "nothing changed"
    );

    let out = stack
        .cli(&[
            "rollback",
            "probe",
            "dev",
            "--emergency",
            "--reason",
            "orders fail since 14:02, INC-4711",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(exact(&client, "public.probe(integer)").await?, v1);
    for expected in [
        "EMERGENCY: orders fail since 14:02, INC-4711",
        "[-] smoke",
        "emergency: smoke test skipped",
        "[-] post-restore-smoke",
        "Mode: EMERGENCY — reason: orders fail since 14:02, INC-4711 (smoke tests skipped; a rollback needs the deployer role, no approval; audited as rollback.emergency)",
        "Smoke Test: [-] SKIPPED (emergency)",
    ] {
        assert!(
            out.stdout.contains(expected),
            "expected {expected:?} in:\n{out}"
        );
    }
    assert!(!out.stdout.contains("SMOKE TEST:"), "{out}");
    let rollout = rollout_id(&out)?;
    let audit = stack
        .cli(&["audit", "--rollout", &rollout, "--output", "json"])
        .await?;
    assert_eq!(audit.code, 0, "{audit}");
    let entries: serde_json::Value = serde_json::from_str(&audit.stdout)?;
    let actions: Vec<&str> = entries
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"rollback.started"), "{actions:?}");
    let emergency = entries
        .as_array()
        .context("array")?
        .iter()
        .find(|e| e["action"] == "rollback.emergency")
        .with_context(|| format!("no rollback.emergency in {audit}"))?;
    assert!(
        emergency["details"]
            .as_str()
            .is_some_and(|d| d.contains("reason: orders fail since 14:02, INC-4711")),
        "{emergency}"
    );
    let note: String = client
        .query_one(
            "SELECT note FROM pgrollout.ledger WHERE action = 'rollback' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    assert!(
        note.starts_with("emergency: orders fail since 14:02, INC-4711; source: backup "),
        "{note}"
    );
    Ok(())
}

#[tokio::test]
async fn history_lists_every_version_in_order_and_rollback_to_goes_to_a_named_one() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    for version in ["v1", "v2", "v3"] {
        stack.write_procedure("probe.sql", &probe(version))?;
        assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    }
    let v3 = exact(&client, "public.probe(integer)").await?;
    let deploys = ledger_ids(&client, "public.probe(integer)", "deploy").await?;
    let v1_row = deploys[0].to_string();

    let out = stack
        .cli(&["rollback", "probe", "dev", "--to", &v1_row])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let live = exact(&client, "public.probe(integer)")
        .await?
        .context("live")?;
    assert!(live.definition.contains("-- v1"), "{live:?}");

    // History needs only the viewer role; rolling back needs deployer.
    let out = stack
        .cli_as("looker", &["rollback", "probe", "dev"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("lacks the deployer role"), "{out}");
    let out = stack.cli_as("looker", &["history", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("LEDGER") && lines[0].contains("TRACE ID"),
        "{out}"
    );
    let rows: Vec<&str> = lines[1..]
        .iter()
        .copied()
        .filter(|l| l.contains("probe(integer)"))
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    for (row, (action, change)) in rows.iter().zip([
        ("deploy", "created"),
        ("deploy", "replaced"),
        ("deploy", "replaced"),
        ("rollback", "restored"),
    ]) {
        assert!(row.contains(action) && row.contains(change), "{row}");
        assert!(row.contains(OPERATOR), "{row}");
    }
    assert!(
        rows[3].starts_with('*'),
        "the live version is marked: {out}"
    );
    assert!(!rows[2].starts_with('*'), "{out}");

    let json = stack
        .cli(&["history", "probe", "dev", "--output", "json"])
        .await?;
    let entries: serde_json::Value = serde_json::from_str(&json.stdout)?;
    let ids: Vec<i64> = entries
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|e| e["ledger_id"].as_i64())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    assert!(
        entries[0]["trace_id"]
            .as_str()
            .is_some_and(|t| t.len() == 32),
        "{json}"
    );
    assert!(
        entries[0]["plan_id"]
            .as_str()
            .is_some_and(|p| p.len() == 64),
        "{json}"
    );

    // A rollback to a named version is itself a version: undoing it returns to v3.
    let out = stack.cli(&["rollback", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(exact(&client, "public.probe(integer)").await?, v3);
    Ok(())
}

#[tokio::test]
async fn a_rollback_past_its_time_limit_says_nothing_changed() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        deployment_extra: "rollback_timeout = \"2s\"".into(),
        agent_timeouts: "lock = \"20s\"".into(),
        ..StackOptions::default()
    })
    .await?;
    let client = stack.zone("dev").pg.connect().await?;
    for version in ["v1", "v2"] {
        stack.write_procedure("probe.sql", &probe(version))?;
        assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    }
    let v2 = exact(&client, "public.probe(integer)").await?;
    // Another session holds the deploy lock, so the rollback cannot start.
    let holder = stack.zone("dev").pg.connect().await?;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x7067_726f_6c6c_6f75_i64])
        .await?;
    let started = Instant::now();
    let out = stack.cli(&["rollback", "probe", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.stderr
            .contains("reached its time limit (rollback_timeout) during step lock"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("the database is exactly as it was before the rollback"),
        "{out}"
    );
    assert_eq!(
        exact(&client, "public.probe(integer)").await?,
        v2,
        "nothing changed"
    );
    drop(holder);
    Ok(())
}
