//! The agent as a DBA would run it in PROD: its database user is not a
//! superuser. It owns the routines it deploys and has what README's
//! "Database user" section lists — CREATE on the database (for the ledger's
//! schema) and on the code's schema, and the table privileges the smoke
//! tests need — and deploys, rolls back, disables and enables with that.
//! A routine it does not own is refused with the reason, nothing changed.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;

async fn definitions(client: &Client) -> Result<Vec<(String, String, String)>> {
    Ok(client
        .query(
            "SELECT p.oid::regprocedure::text, p.proowner::regrole::text, \
                    md5(pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '')) \
             FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// Restarts the zone's agent as `deployer`, a role without superuser.
async fn run_agent_as_deployer(stack: &mut Stack, client: &Client) -> Result<()> {
    let zone = stack.zone("dev");
    let (dbname, superuser, password) = (
        zone.pg.dbname().to_owned(),
        zone.pg.superuser().to_owned(),
        zone.pg.password().to_owned(),
    );
    client
        .batch_execute(&format!(
            "CREATE ROLE deployer LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD '{password}';
             GRANT CREATE ON DATABASE \"{dbname}\" TO deployer;
             GRANT USAGE, CREATE ON SCHEMA public TO deployer;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO deployer;
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO deployer;"
        ))
        .await?;
    let config = zone.agent_config.clone();
    let text = std::fs::read_to_string(&config)?;
    let as_superuser = format!("user = \"{superuser}\"");
    anyhow::ensure!(
        text.contains(&as_superuser),
        "agent config names {as_superuser}"
    );
    std::fs::write(&config, text.replace(&as_superuser, "user = \"deployer\""))?;
    stack.kill_agent("dev").await?;
    stack.start_agent("dev").await?;
    Ok(())
}

#[tokio::test]
async fn a_deployer_without_superuser_deploys_rolls_back_disables_and_enables() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    run_agent_as_deployer(&mut stack, &client).await?;

    for name in ["reconcilemupstream", "addarc"] {
        let out = stack.cli(&["deploy", name, "dev"]).await?;
        assert_eq!(out.code, 0, "{out}");
    }
    let first = definitions(&client).await?;
    assert!(
        first.iter().all(|(_, owner, _)| owner == "deployer"),
        "{first:?}"
    );
    let ledger_owner: String = client
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgrollout'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(ledger_owner, "deployer");

    let sql = std::fs::read_to_string(stack.project.join("procedures/addarc.sql"))?;
    stack.write_procedure(
        "addarc.sql",
        &sql.replace(
            "v_reconciled integer := 0;",
            "v_reconciled integer := 0; -- v2",
        ),
    )?;
    let out = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_ne!(definitions(&client).await?, first);
    let out = stack.cli(&["rollback", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(definitions(&client).await?, first);

    let out = stack.cli(&["disable", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_ne!(definitions(&client).await?, first);
    let out = stack.cli(&["enable", "addarc", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(definitions(&client).await?, first);
    Ok(())
}

#[tokio::test]
async fn a_routine_the_deployer_does_not_own_is_refused_with_the_reason() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    // removearc exists already, created by the superuser (as a DBA's hand
    // would): the deployer may not replace it.
    let sql = std::fs::read_to_string(stack.project.join("procedures/removearc.sql"))?;
    client.batch_execute(&sql).await?;
    run_agent_as_deployer(&mut stack, &client).await?;
    let before = definitions(&client).await?;

    let out = stack.cli(&["deploy", "removearc", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    let text = out.to_string();
    assert!(text.contains("must be owner of function"), "{out}");
    assert!(text.contains("42501"), "the SQLSTATE is shown: {out}");
    assert_eq!(definitions(&client).await?, before, "nothing changed");
    Ok(())
}

#[tokio::test]
async fn without_create_on_the_database_the_ledger_schema_made_for_it_is_used() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    run_agent_as_deployer(&mut stack, &client).await?;
    let dbname = stack.zone("dev").pg.dbname().to_owned();
    client
        .batch_execute(&format!(
            "REVOKE CREATE ON DATABASE \"{dbname}\" FROM deployer;
             CREATE SCHEMA pgrollout AUTHORIZATION deployer;"
        ))
        .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0);
    assert_eq!(rows, 1);
    Ok(())
}
