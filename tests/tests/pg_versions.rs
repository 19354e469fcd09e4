//! What differs between PostgreSQL majors (issue 22), run against whichever
//! server `PGROLLOUT_TEST_PG_BIN` names (Debian's 15 by default);
//! `deploy/test-versions.sh` runs this file and the rest of the end-to-end
//! core once per supported major, 13 to 18.

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;

/// The routine's definition as PostgreSQL prints it, `None` when absent.
async fn definition(client: &Client, signature: &str) -> Result<Option<String>> {
    let row = client
        .query_one(
            "SELECT pg_get_functiondef(to_regprocedure($1))",
            &[&signature],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_job_connects_and_names_the_servers_major() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let major = stack.zone("dev").pg.server_major().await?;

    // On 13 every job used to fail here: the agent asked for a setting 13
    // does not have (client_connection_check_interval) at connect.
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let connected = format!("connected to target main (PostgreSQL {major})");
    assert!(out.stdout.contains(&connected), "{connected:?} in:\n{out}");
    assert!(
        definition(&client, "public.reconcilemupstream(text)")
            .await?
            .is_some(),
        "{out}"
    );
    Ok(())
}

/// A database that refuses writes — a standby reached after a failover, or
/// `default_transaction_read_only` set by a DBA — is refused at connect,
/// naming why, before the agent begins anything: 14+ report it when the
/// session starts, 13 is asked.
#[tokio::test]
async fn a_read_only_database_is_refused_at_connect_saying_why() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let dbname = stack.zone("dev").pg.dbname().to_owned();
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{dbname}\" SET default_transaction_read_only = on"
        ))
        .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stdout.contains("[FAIL] connect"), "{out}");
    assert!(
        out.to_string()
            .contains("is read-only: default_transaction_read_only = on for this database or user"),
        "{out}"
    );
    assert!(
        definition(&client, "public.reconcilemupstream(text)")
            .await?
            .is_none(),
        "nothing created"
    );
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{dbname}\" RESET default_transaction_read_only"
        ))
        .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

const ATOMIC_V1: &str =
    "CREATE OR REPLACE FUNCTION public.atomic_total(p integer) RETURNS integer\n\
     LANGUAGE sql IMMUTABLE\n\
     BEGIN ATOMIC\n  SELECT p * 2;\nEND;\n";
const ATOMIC_V2: &str =
    "CREATE OR REPLACE FUNCTION public.atomic_total(p integer) RETURNS integer\n\
     LANGUAGE sql IMMUTABLE\n\
     BEGIN ATOMIC\n  SELECT p * 3;\nEND;\n";
const ATOMIC_SIDECAR: &str = "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"perseus_app\"]\n\n\
    [[smoke_tests]]\nname = \"computes\"\ncall = \"SELECT public.atomic_total(2)\"\nmax_duration = \"2s\"\n\
    expect_columns = [ { name = \"atomic_total\", type = \"integer\" } ]\n";

/// SQL-standard bodies (`BEGIN ATOMIC`, kept parsed in `prosqlbody`) exist
/// from 14: there they deploy, redeploy unchanged and roll back byte for
/// byte; 13 refuses them at CREATE and nothing changes.
#[tokio::test]
async fn a_sql_standard_body_deploys_and_rolls_back_exactly_from_14_and_is_refused_on_13(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let signature = "public.atomic_total(integer)";
    stack.write_procedure("atomic_total.sql", ATOMIC_V1)?;
    stack.write_procedure("atomic_total.toml", ATOMIC_SIDECAR)?;

    let first = stack.cli(&["deploy", "atomic_total", "dev"]).await?;
    if stack.zone("dev").pg.server_major().await? < 14 {
        assert_eq!(first.code, 2, "{first}");
        assert!(first.stdout.contains("42601"), "a syntax error:\n{first}");
        assert_eq!(definition(&client, signature).await?, None, "{first}");
        return Ok(());
    }
    assert_eq!(first.code, 0, "{first}");
    let has_sql_body: bool = client
        .query_one(
            "SELECT prosqlbody IS NOT NULL FROM pg_proc WHERE oid = to_regprocedure($1)",
            &[&signature],
        )
        .await?
        .get(0);
    assert!(has_sql_body, "kept as a parsed body");
    let v1 = definition(&client, signature).await?.context("v1")?;

    let again = stack.cli(&["deploy", "atomic_total", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("[unchanged]"), "{again}");

    stack.write_procedure("atomic_total.sql", ATOMIC_V2)?;
    let second = stack.cli(&["deploy", "atomic_total", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    assert!(definition(&client, signature)
        .await?
        .is_some_and(|d| d.contains("p * 3")));

    let back = stack.cli(&["rollback", "atomic_total", "dev"]).await?;
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(definition(&client, signature).await?, Some(v1), "{back}");
    Ok(())
}
