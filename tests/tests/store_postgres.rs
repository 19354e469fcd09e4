//! The controller on a PostgreSQL store (issue 18), as an operator runs it:
//! `[store] url = "postgres://…"`, a deploy dev → qa with an approval, the
//! history and the audit log read back, the controller killed and restarted
//! with everything still there; and a store it cannot reach refused at start
//! with a clear message that never shows the password.

use anyhow::{Context, Result};
use pgrollout_tests::{
    free_port, Binaries, OpensslCa, PgCluster, Process, Stack, StackOptions, TestDir,
};

#[tokio::test]
async fn a_controller_on_a_postgres_store_deploys_approves_and_survives_a_restart() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        environment_extra: vec![("qa".into(), "require_approval = true\napprovals = 1".into())],
        store_url: Some(store.url()),
        ..StackOptions::default()
    })
    .await?;
    assert!(
        !stack.dir.path().join("controller.sqlite").exists(),
        "no SQLite file beside a PostgreSQL store"
    );

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "qa", "--output", "json"])
        .await?;
    assert_eq!(out.code, 5, "parked for its approval: {out}");
    let parked: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let request = parked["request"]["request"]
        .as_str()
        .context("request id")?
        .to_owned();
    // --follow: the approved deploy runs, and its result is the exit code.
    let out = stack
        .cli_as("approver-1", &["approve", &request, "--follow"])
        .await?;
    assert_eq!(out.code, 0, "{out}");

    // What the store's database holds, read as an operator would with psql.
    let client = store.connect().await?;
    let done: i64 = client
        .query_one(
            "SELECT count(*) FROM rollouts WHERE state = 'succeeded' AND kind = 'deploy'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(done, 2, "dev's deploy and qa's approved one");
    let approvals: i64 = client
        .query_one(
            "SELECT count(*) FROM approvals WHERE decision = 'approve'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(approvals, 1);
    let entries: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await?
        .get(0);
    assert!(
        entries > 5,
        "the audit log is in the store: {entries} entries"
    );

    let history = stack.cli(&["history", "reconcilemupstream", "qa"]).await?;
    assert_eq!(history.code, 0, "{history}");
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    assert!(verify.stdout.starts_with("audit log intact: "), "{verify}");

    // kill -9 and start again on the same store: nothing is lost.
    stack.kill_9_and_restart_controller(|config| config).await?;
    let after = stack.cli(&["history", "reconcilemupstream", "qa"]).await?;
    assert_eq!(after.code, 0, "{after}");
    assert_eq!(
        after.stdout, history.stdout,
        "the history survives the restart"
    );
    let rollouts = stack.cli(&["rollouts", "--output", "json"]).await?;
    assert_eq!(rollouts.code, 0, "{rollouts}");
    let listed: serde_json::Value = serde_json::from_str(&rollouts.stdout)?;
    let succeeded = listed
        .as_array()
        .context("rollouts")?
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .count();
    assert_eq!(succeeded, 2, "{listed}");
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");

    // Tampering in the database is found, as with SQLite.
    client
        .execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = (SELECT min(seq) + 2 FROM audit_log)",
            &[],
        )
        .await?;
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 1, "{verify}");
    assert!(verify.stdout.contains("audit log BROKEN"), "{verify}");
    Ok(())
}

/// A controller config whose store is `url` (plus `store_extra` keys of the
/// `[store]` table), in `dir`.
fn store_config(dir: &TestDir, url: &str, store_extra: &str) -> Result<String> {
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\noperators = \"127.0.0.1:{}\"\nagents = \"127.0.0.1:{}\"\n\
             [store]\nurl = \"{url}\"\n{store_extra}\n[audit]\nkey_file = \"{}\"\n[environments.dev]\n",
            free_port(),
            free_port(),
            dir.path().join("audit.key").display()
        ),
    )?;
    Ok(config.to_string_lossy().into_owned())
}

/// `serve` on a config whose store is `url`, run to its exit.
async fn serve_on_store(url: &str) -> Result<pgrollout_tests::CommandOutput> {
    serve_on_store_with(url, "").await
}

async fn serve_on_store_with(
    url: &str,
    store_extra: &str,
) -> Result<pgrollout_tests::CommandOutput> {
    let dir = TestDir::new("store-refused")?;
    let config = store_config(&dir, url, store_extra)?;
    Binaries::locate()?
        .run_cli(["serve", "--config", &config, "--dev-plaintext"], &[])
        .await
}

#[tokio::test]
async fn a_store_it_cannot_reach_is_refused_at_start_without_showing_the_password() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let secret = "Wr0ng-S3cret-xyz";
    let wrong = format!(
        "postgres://{}:{secret}@{}:{}/{}",
        store.superuser(),
        store.host(),
        store.port(),
        store.dbname()
    );
    let out = serve_on_store(&wrong).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("cannot connect to the store at postgres://postgres@127.0.0.1:"),
        "{out}"
    );
    assert!(
        out.stderr.contains("password authentication failed"),
        "{out}"
    );
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "{out}"
    );

    // The store's server down at start: said so, with the same exit code.
    let port = store.port();
    store.stop().await?;
    let down = format!(
        "postgres://{}:{}@127.0.0.1:{port}/{}",
        store.superuser(),
        store.password(),
        store.dbname()
    );
    let out = serve_on_store(&down).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("cannot connect to the store at"),
        "{out}"
    );
    assert!(
        out.stderr.contains("Connection refused")
            || out.stderr.contains("error connecting to server"),
        "{out}"
    );
    assert!(!out.stderr.contains(store.password()), "{out}");
    Ok(())
}

#[tokio::test]
async fn the_store_connection_is_tls_verified_against_the_configured_ca() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let dir = TestDir::new("store-tls")?;
    let ca = OpensslCa::create(dir.path(), "store").await?;
    let (certificate, key) = ca.issue_server_certificate("IP:127.0.0.1").await?;
    store
        .require_tls(
            &std::fs::read_to_string(certificate)?,
            &std::fs::read_to_string(key)?,
        )
        .await?;
    let url = format!("{}?sslmode=require", store.url());

    // Required TLS without roots to verify the server with: refused, saying what is missing.
    let out = serve_on_store(&url).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("sslmode=require needs `[store] ca_file`"),
        "{out}"
    );
    // Roots that did not sign the server's certificate: refused.
    let other = OpensslCa::create(dir.path(), "other").await?;
    let out = serve_on_store_with(
        &url,
        &format!("ca_file = \"{}\"", other.certificate.display()),
    )
    .await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("cannot connect to the store at"),
        "{out}"
    );
    assert!(!out.stderr.contains(store.password()), "{out}");

    // The right roots: the controller starts, and its connections are encrypted.
    let config = store_config(
        &dir,
        &url,
        &format!("ca_file = \"{}\"", ca.certificate.display()),
    )?;
    let controller = Process::spawn(
        &Binaries::locate()?.controller,
        ["serve", "--config", config.as_str(), "--dev-plaintext"],
        &[],
        "controller",
    )?;
    controller
        .wait_for_line("controller listening", std::time::Duration::from_secs(30))
        .await?;
    // Read through psql (it connects over TLS too): the controller's
    // connections are encrypted, and the schema was created through them.
    let seen = store
        .execute_sql(
            "SELECT 'tls=' || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'pgrollout-controller' AND s.ssl;
             SELECT 'plain=' || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'pgrollout-controller' AND NOT s.ssl;
             SELECT 'migrated=' || count(*) FROM pgrollout_schema;",
        )
        .await?;
    assert!(seen.contains("tls=") && !seen.contains("tls=0"), "{seen}");
    assert!(seen.contains("plain=0"), "{seen}");
    // Every PostgreSQL migration recorded (the baseline and each later one).
    assert!(
        seen.contains("migrated=") && !seen.contains("migrated=0"),
        "{seen}"
    );
    drop(controller);
    Ok(())
}
