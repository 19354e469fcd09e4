//! The agent's own statements never resolve a name through a schema another
//! role can create in. PostgreSQL picks the best-matching overload across the
//! whole search path, so with `public` on it a role that may create there
//! plants `public.unnest(text[])`, which beats `pg_catalog.unnest(anyarray)`
//! and runs with the agent's privileges the next time the agent reads the
//! catalog (CVE-2018-1058's pattern). Here such traps are planted by a role
//! with nothing but CREATE on `public`, every kind of job is run, and the
//! traps' counter (a sequence: it counts even inside rolled-back work) must
//! stay untouched; meanwhile the project's own unqualified code still runs
//! from `public`, as it always did.
//!
//! And a ledger an older agent wrote (`f(integer)` for a `public` routine) is
//! rewritten once in the qualified form by the new agent's first connection,
//! and rolled back through as before.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;

/// Traps for the polymorphic or coercing catalog functions an agent's query
/// might call unqualified; each counts its calls and then does the real work,
/// so a hijack shows in the counter, not as a failure.
const TRAPS: &str = r#"
CREATE ROLE mallory NOLOGIN;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE SEQUENCE public.trap_calls;
GRANT USAGE, UPDATE ON SEQUENCE public.trap_calls TO PUBLIC;
SET ROLE mallory;
CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.unnest(a oid[]) RETURNS SETOF oid LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION public.array_length(a text[], d integer) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN pg_catalog.array_length(a, d); END $$;
CREATE FUNCTION public.cardinality(a text[]) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN pg_catalog.cardinality(a); END $$;
CREATE FUNCTION public.lower(n name) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN pg_catalog.lower(n::text); END $$;
CREATE FUNCTION public.md5(n name) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN pg_catalog.md5(n::text); END $$;
-- An operator too: `oid = regclass` has no exact match in pg_catalog.
CREATE FUNCTION public.oid_is(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_catalog.nextval('public.trap_calls'); RETURN a OPERATOR(pg_catalog.=) b::oid; END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.oid_is);
RESET ROLE;
"#;

const V1: &str = "CREATE OR REPLACE FUNCTION public.total(n integer) RETURNS integer \
    LANGUAGE sql AS $$ SELECT helper(n) + 1 $$;\n";
const V2: &str = "CREATE OR REPLACE FUNCTION public.total(n integer) RETURNS integer \
    LANGUAGE sql AS $$ SELECT helper(n) + 2 $$;\n";
/// Unqualified, as most code calls: it must still resolve in `public`. The
/// second call moves the session's path to `public` for good, as a hostile
/// one would: its savepoint's rollback must undo that before the agent's
/// next statement.
const SIDECAR: &str = "[[smoke_tests]]\nname = \"adds\"\ncall = \"SELECT total(1) AS result\"\n\
    expect_columns = [ { name = \"result\", type = \"integer\" } ]\n\
    [[smoke_tests]]\nname = \"moves the path\"\n\
    call = \"SELECT pg_catalog.set_config('search_path', 'public', false) AS p\"\n";

async fn trap_calls(client: &Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.trap_calls",
            &[],
        )
        .await?
        .get(0))
}

async fn total(client: &Client) -> Result<i32> {
    Ok(client
        .query_one("SELECT public.total(1)", &[])
        .await?
        .get(0))
}

#[tokio::test]
async fn functions_planted_in_public_never_run_in_the_agents_statements() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE FUNCTION public.helper(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT n * 10 $$;",
        )
        .await?;
    client.batch_execute(TRAPS).await?;
    stack.write_procedure("total.sql", V1)?;
    stack.write_procedure("total.toml", SIDECAR)?;

    let first = stack.cli(&["deploy", "total", "dev"]).await?;
    assert_eq!(first.code, 0, "{first}");
    assert_eq!(total(&client).await?, 11);
    stack.write_procedure("total.sql", V2)?;
    let second = stack.cli(&["deploy", "total", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    assert_eq!(total(&client).await?, 12);
    let again = stack.cli(&["deploy", "total", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert_eq!(
        trap_calls(&client).await?,
        0,
        "a function planted in public ran in one of the deploys' statements"
    );
    for args in [
        &["history", "total", "dev"][..],
        &["smoke", "total", "dev"],
        &["check", "total", "dev"],
    ] {
        let out = stack.cli(args).await?;
        assert_eq!(out.code, 0, "{args:?}: {out}");
    }
    // The scan reads the catalog too, and shows the DBA what was planted.
    let drift = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(drift.code, 4, "{drift}");
    assert!(
        drift
            .stdout
            .contains("not deployed by pgrollout: public.unnest(text[])"),
        "{drift}"
    );
    let rollback = stack.cli(&["rollback", "total", "dev"]).await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    assert_eq!(total(&client).await?, 11, "rolled back to v1");
    let disable = stack.cli(&["disable", "total", "dev", "--revoke"]).await?;
    assert_eq!(disable.code, 0, "{disable}");
    let enable = stack.cli(&["enable", "total", "dev"]).await?;
    assert_eq!(enable.code, 0, "{enable}");
    let retire = stack
        .cli(&["retire", "total(integer)", "dev", "--reason", "CHG-1"])
        .await?;
    assert_eq!(retire.code, 0, "{retire}");

    assert_eq!(
        trap_calls(&client).await?,
        0,
        "a function planted in public ran in one of the agent's statements"
    );
    // Every identity the ledger holds names its schema.
    let unqualified: i64 = client
        .query_one(
            "SELECT count(*) FROM pgrollout.ledger WHERE identity NOT LIKE 'public.%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(unqualified, 0);
    Ok(())
}

#[tokio::test]
async fn a_ledger_an_older_agent_wrote_is_qualified_once_and_rolled_back_as_before() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE FUNCTION public.helper(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT n * 10 $$; \
             CREATE SCHEMA app; \
             CREATE FUNCTION app.kept(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT n $$;",
        )
        .await?;
    stack.write_procedure("total.sql", V1)?;
    let first = stack.cli(&["deploy", "total", "dev"]).await?;
    assert_eq!(first.code, 0, "{first}");
    stack.write_procedure("total.sql", V2)?;
    let second = stack.cli(&["deploy", "total", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    // The ledger as an agent that searched `public` wrote it: `public`
    // routines unqualified, no mark; plus a row of a routine since dropped
    // and one of another schema, which that agent qualified; and from
    // before disables were recorded (no `new_identity` column).
    stack.kill_agent("dev").await?;
    client
        .batch_execute(
            "UPDATE pgrollout.ledger SET identity = substr(identity, length('public.') + 1); \
             INSERT INTO pgrollout.ledger (job_id, attempt, rollout_id, plan_id, action, identity, change, actor) \
             VALUES ('j-old', 1, 'r-old', 'p-old', 'deploy', 'gone(integer)', 'created', 'someone'), \
                    ('j-old', 1, 'r-old', 'p-old', 'deploy', 'app.kept(integer)', 'created', 'someone'); \
             COMMENT ON COLUMN pgrollout.ledger.identity IS NULL; \
             ALTER TABLE pgrollout.ledger DROP COLUMN new_identity;",
        )
        .await?;

    // The new agent's first connection rewrites it, once.
    stack.start_agent("dev").await?;
    let history = stack.cli(&["history", "total", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");
    assert!(
        history.stdout.contains("public.total(integer)"),
        "{history}"
    );
    let identities: Vec<String> = client
        .query("SELECT identity FROM pgrollout.ledger ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        identities,
        [
            "public.total(integer)",
            "public.total(integer)",
            "public.gone(integer)",
            "app.kept(integer)"
        ]
    );

    let rollback = stack.cli(&["rollback", "total", "dev"]).await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    assert_eq!(total(&client).await?, 11, "rolled back to v1");
    let actions: Vec<String> = client
        .query(
            "SELECT action FROM pgrollout.ledger WHERE identity = 'public.total(integer)' ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["deploy", "deploy", "rollback"]);
    Ok(())
}

async fn rated(client: &Client) -> Result<i32> {
    Ok(client
        .query_one("SELECT public.rate('ok', 2)::integer", &[])
        .await?
        .get(0))
}

/// The commonest real code: no `pgrollout.toml`, a type of `public` in the
/// signature, written unqualified. The agent's path does not hold `public`,
/// yet the routine is found, redeployed, recorded under its qualified
/// identity, and found again when an operator names it with its types as
/// written.
#[tokio::test]
async fn a_signature_with_a_type_of_public_deploys_changes_and_rolls_back() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy'); \
             CREATE DOMAIN public.score AS integer CHECK (VALUE >= 0);",
        )
        .await?;
    let version = |n: i32| {
        format!(
            "CREATE OR REPLACE FUNCTION rate(m mood, s score) RETURNS score LANGUAGE sql \
             AS $$ SELECT (s + {n})::score $$;\n"
        )
    };
    stack.write_procedure("rate.sql", &version(1))?;
    stack.write_procedure(
        "rate.toml",
        "[[smoke_tests]]\nname = \"rates\"\ncall = \"SELECT rate('ok', 2) AS r\"\n",
    )?;
    let first = stack.cli(&["deploy", "rate", "dev"]).await?;
    assert_eq!(first.code, 0, "{first}");
    let unchanged = stack.cli(&["deploy", "rate", "dev"]).await?;
    assert_eq!(unchanged.code, 0, "{unchanged}");
    assert!(unchanged.stdout.contains("[unchanged]"), "{unchanged}");
    stack.write_procedure("rate.sql", &version(2))?;
    let second = stack.cli(&["deploy", "rate", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    assert_eq!(rated(&client).await?, 4);
    let identities: Vec<String> = client
        .query("SELECT DISTINCT identity FROM pgrollout.ledger", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(identities, ["public.rate(public.mood,public.score)"]);
    // Named with its types as the source writes them.
    let history = stack.cli(&["history", "rate(mood, score)", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");
    assert!(
        history
            .stdout
            .contains("public.rate(public.mood,public.score)"),
        "{history}"
    );
    let rollback = stack.cli(&["rollback", "rate(mood, score)", "dev"]).await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    assert_eq!(rated(&client).await?, 3);
    let drift = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(drift.code, 0, "{drift}");
    Ok(())
}
