//! Upgrading controllers one at a time over one PostgreSQL store (issue 18,
//! item 5): once a newer controller has migrated the store, an older
//! `pgrollout serve` refuses to start on it — exit 2, naming both schema
//! versions and what to do — instead of running on a schema it does not
//! know. The newer version is what the store records in `pgrollout_schema`.

use std::time::Duration;

use anyhow::Result;
use pgrollout_tests::{free_port, Binaries, PgCluster, Process, TestDir};

#[tokio::test]
async fn an_older_controller_refuses_to_start_on_a_store_a_newer_one_migrated() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let bins = Binaries::locate()?;
    let dir = TestDir::new("store-upgrade")?;
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\noperators = \"127.0.0.1:{}\"\nagents = \"127.0.0.1:{}\"\n\
             [store]\nurl = \"{}\"\n[audit]\nkey_file = \"{}\"\n[environments.dev]\n",
            free_port(),
            free_port(),
            store.url(),
            dir.path().join("audit.key").display()
        ),
    )?;
    let config = config.to_string_lossy().to_string();
    let args = ["serve", "--config", &config, "--dev-plaintext"];

    // This version creates the store and stops.
    let mut first = Process::spawn(&bins.controller, args, &[], "controller")?;
    first
        .wait_for_line("controller listening", Duration::from_secs(30))
        .await?;
    first.terminate_and_wait().await?;

    // A newer controller migrated it further (its version row is all an
    // older binary can see of that).
    let client = store.connect().await?;
    let known: i64 = client
        .query_one("SELECT max(version) FROM pgrollout_schema", &[])
        .await?
        .get(0);
    let newer = known + 1;
    client
        .execute(
            "INSERT INTO pgrollout_schema (version, applied_at) VALUES ($1, 0)",
            &[&newer],
        )
        .await?;

    let out = bins.run_cli(args, &[]).await?;
    assert_eq!(out.code, 2, "refused at start: {out}");
    assert!(
        out.stderr.contains(&format!(
            "its schema is at version {newer}, newer than this controller knows (pgrollout {}, schema {known})",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("An older controller does not start on a newer store"),
        "{out}"
    );
    assert!(
        !out.stderr.contains(store.password()) && !out.stdout.contains(store.password()),
        "no password in the refusal: {out}"
    );
    assert!(
        !out.stderr.contains("controller listening")
            && !out.stdout.contains("controller listening"),
        "{out}"
    );
    let versions: i64 = client
        .query_one("SELECT max(version) FROM pgrollout_schema", &[])
        .await?
        .get(0);
    assert_eq!(versions, newer, "the refused controller changed nothing");
    Ok(())
}
