//! The ledger's new side is read from the catalog by the statement that
//! records it (issue 15 item 9), and its SHA-256 must be the one the agent
//! computes of the definition it receives: the unchanged check, drift and
//! rollbacks compare the two. Checked where they could part: a database in
//! LATIN1 (the server's bytes are not the agent's) and a body with
//! characters outside ASCII; then the ledger's rows as a DBA reads them.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;
use sha2::{Digest, Sha256};

const ROUTINE_V1: &str =
    "CREATE OR REPLACE FUNCTION public.gruss(n text) RETURNS text LANGUAGE sql \
AS $$ SELECT 'Grüße, ' || n || ' - § ½ é' $$;\n";
const ROUTINE_V2: &str =
    "CREATE OR REPLACE FUNCTION public.gruss(n text) RETURNS text LANGUAGE sql \
AS $$ SELECT 'Grüße! ' || n || ' § ½ è' $$;\n";

/// The live definition's SHA-256 as a client with UTF-8 encoding computes it.
async fn live_sha256(client: &Client) -> Result<String> {
    let definition: String = client
        .query_one(
            "SELECT pg_get_functiondef('public.gruss(text)'::regprocedure)",
            &[],
        )
        .await?
        .get(0);
    Ok(hex::encode(Sha256::digest(definition.as_bytes())))
}

/// (change, previous_sha256, new_sha256, previous definition is set,
/// new_owner, new_acl is set) of every ledger row, oldest first.
async fn ledger_rows(client: &Client) -> Result<Vec<(String, String, String, bool, String)>> {
    Ok(client
        .query(
            "SELECT change, coalesce(previous_sha256, ''), coalesce(new_sha256, ''), \
                    previous_definition IS NOT NULL, coalesce(new_owner, '') \
             FROM pgrollout.ledger ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect())
}

#[tokio::test]
async fn the_ledgers_hashes_are_the_agents_in_a_latin1_database() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let pg = &stack.zone("dev").pg;
    // The zone's database again, in LATIN1: the catalog holds other bytes
    // than the UTF-8 the agent receives.
    let mut admin = pg.config();
    admin.dbname("postgres");
    let admin = pgrollout_tests::connect(&admin).await?;
    admin
        .batch_execute(&format!("DROP DATABASE \"{0}\" WITH (FORCE)", pg.dbname()))
        .await?;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{0}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
            pg.dbname()
        ))
        .await?;
    let client = pg.connect().await?;
    let encoding: String = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await?
        .get(0);
    assert_eq!(encoding, "LATIN1");

    stack.write_procedure("gruss.sql", ROUTINE_V1)?;
    let out = stack.cli(&["deploy", "gruss", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let first = live_sha256(&client).await?;
    let owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE oid = 'public.gruss(text)'::regprocedure",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        ledger_rows(&client).await?,
        vec![(
            "created".into(),
            String::new(),
            first.clone(),
            false,
            owner.clone()
        )]
    );

    // The same source again: the agent's own hash of the live definition
    // matches the ledger's, so nothing is touched.
    let out = stack.cli(&["deploy", "gruss", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("unchanged"),
        "an unchanged redeploy must say so:\n{out}"
    );
    let rows = ledger_rows(&client).await?;
    assert_eq!(
        rows[1],
        (
            "unchanged".into(),
            first.clone(),
            first.clone(),
            true,
            owner.clone()
        )
    );

    // A change: both sides, each hashed as the agent hashes it.
    stack.write_procedure("gruss.sql", ROUTINE_V2)?;
    let out = stack.cli(&["deploy", "gruss", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let second = live_sha256(&client).await?;
    assert_ne!(first, second);
    let rows = ledger_rows(&client).await?;
    assert_eq!(
        rows[2],
        ("replaced".into(), first.clone(), second, true, owner)
    );

    // And back: the rollback finds the version the ledger names.
    let out = stack.cli(&["rollback", "gruss", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(live_sha256(&client).await?, first);
    Ok(())
}

/// The hostile variant: whoever may create functions in `public` (every
/// role before PostgreSQL 15) plants a `convert_to(text, text)` — with an
/// unknown literal, PostgreSQL prefers it over `pg_catalog.convert_to(text,
/// name)` — and would run as the agent inside the ledger's own statement.
/// The statement names its functions in `pg_catalog`: the trap never runs
/// and the hashes stay the client's.
#[tokio::test]
async fn a_planted_convert_to_in_public_never_runs_in_the_ledger_statement() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE public.trap (who text);
             CREATE FUNCTION public.convert_to(t text, e text) RETURNS bytea LANGUAGE sql AS $$
               INSERT INTO public.trap VALUES (current_user) RETURNING '\\x00'::bytea $$;",
        )
        .await?;
    stack.write_procedure("gruss.sql", ROUTINE_V1)?;
    let out = stack.cli(&["deploy", "gruss", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    stack.write_procedure("gruss.sql", ROUTINE_V2)?;
    let out = stack.cli(&["deploy", "gruss", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let trapped: i64 = client
        .query_one("SELECT count(*) FROM public.trap", &[])
        .await?
        .get(0);
    assert_eq!(
        trapped, 0,
        "the planted function ran in the agent's session"
    );
    let rows = ledger_rows(&client).await?;
    assert_eq!(rows[1].2, live_sha256(&client).await?);
    assert_eq!(rows[1].0, "replaced");
    Ok(())
}
