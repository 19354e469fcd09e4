//! `pgrollout drift` (issue 20): what changed behind pgrollout's back,
//! detected by the zone's agent comparing the live catalog with the ledger.
//! Real clusters, the real binaries; what is checked is what an operator
//! reads: the printed report (and its JSON), the exit code (0 none, 4
//! drift), and that the scan changed nothing (the ledger's rows).

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{pg_bin_dir, run_command, Stack, StackOptions, CLI_TIMEOUT};

/// Five overloads of one name, deployed in one rollout, so each can drift
/// its own way; `dr(numeric)` is left alone until the rename.
const DR: &str = "\
CREATE OR REPLACE FUNCTION public.dr(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'int ' || x $$;\n\n\
CREATE OR REPLACE FUNCTION public.dr(x text) RETURNS text LANGUAGE sql AS $$ SELECT 'text ' || x $$;\n\n\
CREATE OR REPLACE FUNCTION public.dr(x boolean) RETURNS text LANGUAGE sql AS $$ SELECT 'bool ' || x $$;\n\n\
CREATE OR REPLACE FUNCTION public.dr(x date) RETURNS text LANGUAGE sql AS $$ SELECT 'date ' || x $$;\n\n\
CREATE OR REPLACE FUNCTION public.dr(x numeric) RETURNS text LANGUAGE sql AS $$ SELECT 'num ' || x $$;\n";

async fn deployed_stack() -> Result<(Stack, Client)> {
    let stack = Stack::start_with(StackOptions::default()).await?;
    stack.write_procedure("dr.sql", DR)?;
    let out = stack.cli(&["deploy", "dr", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let client = stack.zone("dev").pg.connect().await?;
    Ok((stack, client))
}

async fn ledger_rows(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0))
}

#[tokio::test]
async fn hand_edit_grant_drop_set_search_path_rename_and_a_stranger_are_each_detected() -> Result<()>
{
    let (mut stack, client) = deployed_stack().await?;

    let clean = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(clean.code, 0, "just deployed, nothing drifted: {clean}");
    assert!(
        clean.stdout.contains("no drift in dev") && clean.stdout.contains("5 routine(s)"),
        "{clean}"
    );

    client
        .batch_execute(
            "CREATE ROLE drift_intruder;
             CREATE OR REPLACE FUNCTION public.dr(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'hotfix ' || x $$;
             GRANT EXECUTE ON FUNCTION public.dr(text) TO drift_intruder;
             DROP FUNCTION public.dr(boolean);
             ALTER FUNCTION public.dr(date) SET search_path = pg_temp;
             ALTER FUNCTION public.dr(numeric) RENAME TO dr_old;
             CREATE FUNCTION public.handmade() RETURNS integer LANGUAGE sql AS $$ SELECT 42 $$;",
        )
        .await?;
    let rows_before = ledger_rows(&client).await?;

    let out = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(out.code, 4, "drift found is exit 4: {out}");
    let report = &out.stdout;
    for expected in [
        // The hand edit, with a unified diff of the definition.
        "changed by hand: public.dr(integer) (definition)",
        "     CREATE OR REPLACE FUNCTION public.dr(x integer)\n      RETURNS text\n      LANGUAGE sql\n    -AS $function$ SELECT 'int ' || x $function$\n",
        "+AS $function$ SELECT 'hotfix ' || x $function$",
        // The hand GRANT, as a diff of the ACL items.
        "changed by hand: public.dr(text) (acl)",
        "    @@ -1,2 +1,3 @@\n     =X/postgres\n    +drift_intruder=X/postgres\n     postgres=X/postgres\n",
        // The hand DROP.
        "dropped: public.dr(boolean)",
        // ALTER FUNCTION … SET search_path: its own aspect, and the line.
        "changed by hand: public.dr(date) (config)",
        "+ SET search_path TO 'pg_temp'",
        // The rename: the same body under another name.
        "renamed: public.dr(numeric) -> public.dr_old(numeric)",
        // A routine pgrollout never deployed, in a schema it manages.
        "not deployed by pgrollout: public.handmade() (in a managed schema)",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(
        !report.contains("dr_old(numeric) (in a managed schema)"),
        "a renamed routine is reported once, as renamed: {out}"
    );
    assert_eq!(
        ledger_rows(&client).await?,
        rows_before,
        "a scan writes no ledger row"
    );

    // --output json: one document, each finding with its kind.
    let json = stack.cli(&["drift", "dev", "--output", "json"]).await?;
    assert_eq!(json.code, 4, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).context("drift JSON")?;
    assert_eq!(doc["drift"], true);
    assert_eq!(doc["routines_checked"], 5);
    let kinds: Vec<(String, String)> = doc["findings"]
        .as_array()
        .context("findings")?
        .iter()
        .map(|f| {
            (
                f["identity"].as_str().unwrap_or_default().to_owned(),
                f["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let kind_of = |identity: &str| {
        kinds
            .iter()
            .find(|(i, _)| i == identity)
            .map(|(_, k)| k.as_str())
    };
    assert_eq!(kind_of("public.dr(integer)"), Some("changed"), "{json}");
    assert_eq!(kind_of("public.dr(text)"), Some("changed"), "{json}");
    assert_eq!(kind_of("public.dr(boolean)"), Some("dropped"), "{json}");
    assert_eq!(kind_of("public.dr(date)"), Some("changed"), "{json}");
    assert_eq!(kind_of("public.dr(numeric)"), Some("renamed"), "{json}");
    assert_eq!(kind_of("public.handmade()"), Some("unmanaged"), "{json}");
    assert_eq!(kinds.len(), 6, "{json}");

    // Naming routines limits the report.
    let one = stack.cli(&["drift", "dev", "handmade"]).await?;
    assert_eq!(one.code, 4, "{one}");
    assert!(one.stdout.contains("handmade()"), "{one}");
    assert!(!one.stdout.contains("dr(integer)"), "{one}");

    // The scans are audited; drift is `drift.detected` once, when first seen.
    let audit = stack.audit_lines()?;
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("drift.scanned|drift|") && l.contains("dr(boolean)")),
        "{audit:#?}"
    );
    let detected: Vec<&String> = audit
        .iter()
        .filter(|l| {
            l.starts_with("drift.detected|drift|") && l.contains("dropped public.dr(boolean)")
        })
        .collect();
    assert_eq!(detected.len(), 1, "{audit:#?}");
    assert!(
        detected[0].contains("changed public.dr(integer)"),
        "{detected:?}"
    );

    // Without an agent: the scan says so (2) and names --cached, which shows
    // the controller's last scan without contacting any agent.
    stack.kill_agent("dev").await?;
    let down = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(down.code, 2, "{down}");
    assert!(down.stderr.contains("--cached"), "{down}");
    let cached = stack.cli(&["drift", "dev", "--cached"]).await?;
    assert_eq!(cached.code, 4, "{cached}");
    assert!(cached.stdout.contains("cached scan from"), "{cached}");
    assert!(
        cached.stdout.contains("dropped: public.dr(boolean)"),
        "{cached}"
    );

    // An unknown environment is refused (1), as everywhere.
    let unknown = stack.cli(&["drift", "nowhere"]).await?;
    assert_eq!(unknown.code, 1, "{unknown}");
    assert!(unknown.stderr.contains("unknown environment"), "{unknown}");
    Ok(())
}

/// The catalog's rendering, not text, is compared: a database dumped with
/// pg_dump and restored with pg_restore into a new one shows no drift.
#[tokio::test]
async fn a_pg_dump_and_pg_restore_into_a_new_database_is_not_drift() -> Result<()> {
    let mut stack = Stack::start_with(StackOptions::default()).await?;
    // What a deploy records and a dump must carry: a SET option in the
    // definition, an ACL from the sidecar's grants.
    stack.write_procedure(
        "dr.sql",
        &DR.replace(
            "RETURNS text LANGUAGE sql AS $$ SELECT 'date '",
            "RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT 'date '",
        ),
    )?;
    stack.write_procedure(
        "dr.toml",
        "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"perseus_app\"]\n",
    )?;
    let out = stack.cli(&["deploy", "dr", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let client = stack.zone("dev").pg.connect().await?;
    let acl: Option<String> = client
        .query_one(
            "SELECT proacl::text FROM pg_proc WHERE oid = 'public.dr(date)'::regprocedure",
            &[],
        )
        .await?
        .get(0);
    assert!(
        acl.is_some_and(|a| a.contains("perseus_app=X")),
        "the grant is applied"
    );
    let clean = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(clean.code, 0, "{clean}");

    let pg = &stack.zone("dev").pg;
    let bin = pg_bin_dir()?;
    let dump = stack.dir.path().join("dev.dump");
    let port = pg.port().to_string();
    let env = [("PGPASSWORD", pg.password())];
    let common = ["-h", pg.host(), "-p", &port, "-U", pg.superuser()];
    let dumped = run_command(
        bin.join("pg_dump"),
        common
            .iter()
            .copied()
            .chain(["-Fc", "-f", &dump.to_string_lossy(), pg.dbname()]),
        &env,
        CLI_TIMEOUT,
    )
    .await?;
    assert_eq!(dumped.code, 0, "{dumped:?}");
    client
        .batch_execute("CREATE DATABASE drift_restored")
        .await?;
    let restored = run_command(
        bin.join("pg_restore"),
        common.iter().copied().chain([
            "--exit-on-error",
            "-d",
            "drift_restored",
            &dump.to_string_lossy(),
        ]),
        &env,
        CLI_TIMEOUT,
    )
    .await?;
    assert_eq!(restored.code, 0, "{restored:?}");

    // The agent now serves the restored database under the same target.
    let config = stack.zone("dev").agent_config.clone();
    let text = std::fs::read_to_string(&config)?;
    let original = format!("dbname = \"{}\"", pg.dbname());
    anyhow::ensure!(text.contains(&original), "agent config names its database");
    std::fs::write(
        &config,
        text.replace(&original, "dbname = \"drift_restored\""),
    )?;
    stack.kill_agent("dev").await?;
    stack.start_agent("dev").await?;

    let out = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(out.code, 0, "a restored copy is not drift: {out}");
    assert!(out.stdout.contains("5 routine(s)"), "{out}");
    Ok(())
}

/// The `no_drift` gate: a deploy that would replace a routine changed by
/// hand is refused before anything changes (exit 1), naming it with the
/// diff; a deploy that replaces only undrifted routines goes through.
#[tokio::test]
async fn the_no_drift_gate_refuses_to_overwrite_a_hand_edit_and_changes_nothing() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        environment_extra: vec![("dev".into(), "gates = [\"no_drift\"]".into())],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("dr.sql", DR)?;
    let out = stack.cli(&["deploy", "dr", "dev"]).await?;
    assert_eq!(out.code, 0, "nothing drifted yet: {out}");
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.dr(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'hotfix ' || x $$;",
        )
        .await?;
    let rows_before = ledger_rows(&client).await?;

    stack.write_procedure("dr.sql", &DR.replace("'text '", "'TEXT '"))?;
    let out = stack.cli(&["deploy", "dr", "dev"]).await?;
    assert_eq!(out.code, 1, "refused before anything changed: {out}");
    let printed = format!("{}{}", out.stdout, out.stderr);
    for expected in [
        "refused by the no_drift gate",
        "dr(integer) (definition)",
        "-AS $function$ SELECT 'int ' || x $function$",
        "+AS $function$ SELECT 'hotfix ' || x $function$",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected:?} in:\n{out}"
        );
    }
    // Nothing changed: the hand edit is still there, the other overload was
    // not replaced, the ledger has no new row.
    let body = |sig: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)",
                    &[&sig],
                )
                .await?;
            anyhow::Ok(row.get::<_, String>(0))
        }
    };
    assert!(body("public.dr(integer)").await?.contains("hotfix"));
    assert!(body("public.dr(text)").await?.contains("'text '"));
    assert_eq!(ledger_rows(&client).await?, rows_before);

    // A deploy that replaces no drifted routine passes the gate.
    stack.write_procedure(
        "other.sql",
        "CREATE OR REPLACE FUNCTION public.other() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;\n",
    )?;
    let out = stack.cli(&["deploy", "other", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

/// Rollback knows drift: rolling back over a routine changed by hand warns,
/// naming what changed, and the hand-made version is in the rollback's
/// verified backup, written before anything is replaced.
#[tokio::test]
async fn a_rollback_over_a_hand_edit_warns_and_keeps_the_hand_made_version_in_its_backup(
) -> Result<()> {
    let (stack, client) = deployed_stack().await?;
    stack.write_procedure("dr.sql", &DR.replace("'int '", "'INT '"))?;
    let out = stack.cli(&["deploy", "dr", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.dr(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'hotfix ' || x $$;",
        )
        .await?;

    let out = stack.cli(&["rollback", "dr", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let marker = "warning: public.dr(integer): definition changed outside pgrollout since ledger #";
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(marker))
        .with_context(|| format!("no drift warning in:\n{out}"))?;
    let backup = line
        .split("(the hand-made version is kept in backup ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .with_context(|| format!("the warning names no backup: {line}"))?;
    let kept = std::fs::read_to_string(backup).with_context(|| format!("reading {backup}"))?;
    assert!(
        kept.contains("'hotfix '"),
        "the backup holds the hand-made version: {kept}"
    );
    // The recorded version is back.
    let src: String = client
        .query_one(
            "SELECT prosrc FROM pg_proc WHERE oid = 'public.dr(integer)'::regprocedure",
            &[],
        )
        .await?
        .get(0);
    assert!(src.contains("'int '"), "{src}");
    Ok(())
}

/// `drift_scan_interval`: nobody asks, yet a hand edit is found, audited as
/// `drift.detected` by the controller's schedule and sent to the
/// environment's channels once — the scans after it find the same drift and
/// say nothing new — and `--cached` shows the schedule's last scan.
#[tokio::test]
async fn scheduled_scans_audit_and_notify_new_drift_once() -> Result<()> {
    use pgrollout_tests::webhook_endpoint::Endpoint;

    let mut hook = Endpoint::start(200).await?;
    let metrics_port = pgrollout_tests::free_port();
    let stack = Stack::start_with(StackOptions {
        environment_extra: vec![("dev".into(), "drift_scan_interval = \"1s\"".into())],
        controller_extra: format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [notifications]\ntimeout = \"2s\"\nbackoff = \"200ms\"\n\
             [notifications.channels.ops-hook]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\
             [notifications.routes]\ndev = [\"ops-hook\"]\n",
            hook.url
        ),
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("dr.sql", DR)?;
    let out = stack.cli(&["deploy", "dr", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let (_, deployed) = hook.next().await?;
    assert_eq!(deployed["event"], "deploy.succeeded", "{deployed}");

    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.dr(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'hotfix ' || x $$",
        )
        .await?;

    // The schedule finds it within an interval or two; nobody ran a command.
    let (_, detected) = hook.next().await?;
    assert_eq!(detected["event"], "drift.detected", "{detected}");
    let text = detected["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Drift in DEV: changed public.dr(integer)")
            && text.contains("controller (drift_scan_interval)"),
        "{detected}"
    );

    // Three more intervals: the same drift is scanned again (the metric's timestamp moves), never announced
    // again, and the audit log does not grow with the schedule: an unchanged scan is not an event.
    let scheduled = |audit: &str, action: &str| {
        audit
            .lines()
            .filter(|line| line.contains(action) && line.contains("drift_scan_interval"))
            .count()
    };
    let before = stack.cli(&["audit"]).await?.stdout;
    let mut last_scan = last_scan_timestamp(metrics_port).await?;
    for _ in 0..3 {
        let seen = last_scan.clone();
        while last_scan == seen {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            last_scan = last_scan_timestamp(metrics_port).await?;
        }
    }
    let audit = stack.cli(&["audit"]).await?.stdout;
    assert_eq!(
        scheduled(&audit, "drift.detected"),
        1,
        "drift.detected once:\n{audit}"
    );
    assert_eq!(
        scheduled(&audit, "drift.scanned"),
        scheduled(&before, "drift.scanned"),
        "three unchanged scheduled scans wrote no audit entry:\n{audit}"
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(2), hook.next())
            .await
            .is_err(),
        "no second notification for the same drift"
    );

    // The latest scan, as Prometheus sees it: an alert on it needs no scan of its own.
    let (_, metrics) =
        pgrollout_tests::http_get::http_request(metrics_port, "GET", "/metrics").await?;
    for line in [
        "pgrollout_drift_routines{environment=\"dev\",kind=\"changed\"} 1",
        "pgrollout_drift_routines{environment=\"dev\",kind=\"dropped\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }

    let cached = stack.cli(&["drift", "dev", "--cached"]).await?;
    assert_eq!(cached.code, 4, "{cached}");
    assert!(
        cached
            .stdout
            .contains("changed by hand: public.dr(integer) (definition)"),
        "{cached}"
    );
    Ok(())
}

/// The controller's `pgrollout_drift_last_scan_timestamp_seconds` for dev, as Prometheus scrapes it.
async fn last_scan_timestamp(metrics_port: u16) -> Result<String> {
    let (_, metrics) =
        pgrollout_tests::http_get::http_request(metrics_port, "GET", "/metrics").await?;
    Ok(metrics
        .lines()
        .find(|l| l.starts_with("pgrollout_drift_last_scan_timestamp_seconds{environment=\"dev\"}"))
        .unwrap_or_default()
        .to_owned())
}
