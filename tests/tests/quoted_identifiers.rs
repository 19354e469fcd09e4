//! Names as PostgreSQL allows them: a schema, a type and a routine whose
//! names need quoting (capitals, a space), an overload family among them,
//! granted to a role whose name needs quoting too. Each deploys, redeploys
//! unchanged, changes one overload and rolls back to exactly the state
//! before, with the catalog and the ledger naming each routine the way
//! `regprocedure` does.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;

const LIBRARY: &str = "\
CREATE OR REPLACE FUNCTION \"Billing Core\".\"calcTotal\"(amount \"Billing Core\".\"Money Amount\", qty integer)
RETURNS \"Billing Core\".\"Money Amount\" LANGUAGE sql
AS $$ SELECT (amount * qty)::\"Billing Core\".\"Money Amount\" $$;
CREATE OR REPLACE FUNCTION \"Billing Core\".\"calcTotal\"(amount \"Billing Core\".\"Money Amount\")
RETURNS \"Billing Core\".\"Money Amount\" LANGUAGE sql
AS $$ SELECT \"Billing Core\".\"calcTotal\"(amount, 1) $$;
";

const SIDECAR: &str = "\
[[grants]]
privilege = \"EXECUTE\"
to = [\"Billing App\"]

[[smoke_tests]]
name = \"three at 2.50\"
ROUTINE
call = 'SELECT \"Billing Core\".\"calcTotal\"(2.50, 3) AS total'
expect_columns = [ { name = \"total\", type = \"numeric\" } ]
";

/// `regprocedure` text, ACL and `md5` of the definition of every routine
/// in `schema`: what a DBA compares.
async fn catalog_of(client: &Client, schema: &str) -> Result<Vec<(String, String, String)>> {
    Ok(client
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(p.proacl::text, ''), \
                    md5(pg_get_functiondef(p.oid)) \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 ORDER BY 1",
            &[&schema],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

async fn ledger(client: &Client) -> Result<Vec<(String, String)>> {
    Ok(client
        .query(
            "SELECT identity, action FROM pgrollout.ledger ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

#[tokio::test]
async fn routines_whose_names_need_quoting_deploy_change_and_roll_back() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA \"Billing Core\"; \
             CREATE DOMAIN \"Billing Core\".\"Money Amount\" AS numeric(12,2); \
             CREATE ROLE \"Billing App\";",
        )
        .await?;
    stack.write_procedure("calcTotal.sql", LIBRARY)?;
    // Two overloads: the smoke test must say which it tests, and the
    // example the error gives is one a sidecar can hold as it is.
    stack.write_procedure("calcTotal.toml", &SIDECAR.replace("ROUTINE\n", ""))?;
    let out = stack.cli(&["deploy", "\"calcTotal\"", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    let example =
        "routine = '\"Billing Core\".\"calcTotal\"(\"Billing Core\".\"Money Amount\", integer)'";
    assert!(out.stderr.contains(example), "{out}");
    stack.write_procedure("calcTotal.toml", &SIDECAR.replace("ROUTINE", example))?;

    // Typed bare, the name folds to lower case, as in PostgreSQL: refused,
    // saying how to write it.
    let out = stack.cli(&["deploy", "calcTotal", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("did you mean \"calcTotal\"? Names fold to lower case unless double-quoted"),
        "{out}"
    );

    let out = stack.cli(&["deploy", "\"calcTotal\"", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let first = catalog(&client).await?;
    assert_eq!(
        first.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [
            "\"Billing Core\".\"calcTotal\"(\"Billing Core\".\"Money Amount\")",
            "\"Billing Core\".\"calcTotal\"(\"Billing Core\".\"Money Amount\",integer)",
        ]
    );
    let granted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'Billing Core' \
               AND EXISTS (SELECT 1 FROM aclexplode(p.proacl) a \
                           WHERE a.grantee = '\"Billing App\"'::regrole AND a.privilege_type = 'EXECUTE')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        granted, 2,
        "both overloads granted to \"Billing App\": {first:?}"
    );
    let deployed = ledger(&client).await?;
    assert_eq!(deployed.len(), 2, "{deployed:?}");

    // Unchanged: nothing re-created, nothing new in the ledger's versions.
    let out = stack.cli(&["deploy", "\"calcTotal\"", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(catalog(&client).await?, first);

    // One overload changes; the rollback restores exactly the first state.
    stack.write_procedure(
        "calcTotal.sql",
        &LIBRARY.replace("(amount * qty)", "(amount * qty * 1)"),
    )?;
    let out = stack.cli(&["deploy", "\"calcTotal\"", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let changed = catalog(&client).await?;
    assert_ne!(changed, first);
    assert_eq!(changed[0], first[0], "the one-argument overload untouched");

    let out = stack.cli(&["rollback", "\"calcTotal\"", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(catalog(&client).await?, first);
    let history = stack.cli(&["history", "\"calcTotal\"", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");
    assert!(history.stdout.contains("calcTotal"), "{history}");
    Ok(())
}

/// Shapes of routine PostgreSQL has and real code uses: SQL-standard bodies
/// (`BEGIN ATOMIC`, `RETURN`) that depend on another routine, a set-returning
/// `RETURNS TABLE`, a variadic with a default, a procedure with INOUT and OUT
/// parameters, and a name holding a `;`.
const SHAPES: &str = "\
CREATE FUNCTION public.add_atomic(a integer, b integer) RETURNS integer
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
  SELECT a + b;
END;

CREATE OR REPLACE FUNCTION public.twice(x integer) RETURNS integer
LANGUAGE sql
RETURN public.add_atomic(x, x);

CREATE OR REPLACE FUNCTION public.rows_of(n integer) RETURNS TABLE (i integer, sq bigint)
LANGUAGE sql STABLE
AS $$ SELECT g, g::bigint * g FROM generate_series(1, n) g $$;

CREATE OR REPLACE FUNCTION public.variadic_sum(VARIADIC xs numeric[] DEFAULT ARRAY[]::numeric[])
RETURNS numeric LANGUAGE sql AS $$ SELECT coalesce(sum(x), 0) FROM unnest(xs) x $$;

CREATE OR REPLACE PROCEDURE public.proc_out(IN a integer, INOUT b integer, OUT c text)
LANGUAGE plpgsql AS $$ BEGIN b := a * 2; c := 'x' || a; END $$;

CREATE OR REPLACE FUNCTION public.\"weird;name\"() RETURNS text LANGUAGE sql AS $$ SELECT 'a;b' $$;
";

const SHAPES_SIDECAR: &str = "\
[[smoke_tests]]
name = \"twice\"
routine = \"twice\"
call = \"SELECT public.twice(21) AS v\"
expect_columns = [ { name = \"v\", type = \"integer\" } ]

[[smoke_tests]]
name = \"rows\"
routine = \"rows_of\"
call = \"SELECT * FROM public.rows_of(3)\"
expect_columns = [ { name = \"i\", type = \"integer\" }, { name = \"sq\", type = \"bigint\" } ]

[[smoke_tests]]
name = \"procedure\"
routine = \"proc_out\"
call = \"CALL public.proc_out(3, NULL, NULL)\"
";

async fn catalog(client: &Client) -> Result<Vec<(String, String, String)>> {
    catalog_of(client, "Billing Core").await
}

async fn public_catalog(client: &Client) -> Result<Vec<(String, String, String)>> {
    catalog_of(client, "public").await
}

#[tokio::test]
async fn sql_standard_bodies_set_returning_variadic_and_out_procedures_round_trip() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    stack.write_procedure("shapes.sql", SHAPES)?;
    stack.write_procedure("shapes.toml", SHAPES_SIDECAR)?;
    let list = stack.dir.path().join("shapes.txt");
    std::fs::write(
        &list,
        "add_atomic\ntwice\nrows_of\nvariadic_sum\nproc_out\n\"weird;name\"\n",
    )?;
    let list = list.to_string_lossy().into_owned();

    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    let first = public_catalog(&client).await?;
    let names: Vec<&str> = first.iter().map(|r| r.0.as_str()).collect();
    for expected in [
        "add_atomic(integer,integer)",
        "proc_out(integer,integer)",
        "rows_of(integer)",
        "twice(integer)",
        "variadic_sum(numeric[])",
        "\"weird;name\"()",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let twice: i32 = client
        .query_one("SELECT public.twice(21)", &[])
        .await?
        .get(0);
    assert_eq!(twice, 42);

    // Unchanged: nothing re-created.
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(public_catalog(&client).await?, first);

    // The routine a BEGIN ATOMIC body depends on changes, then rolls back:
    // the dependant keeps working and the catalog is the first state again.
    stack.write_procedure(
        "shapes.sql",
        &SHAPES.replace("SELECT a + b;", "SELECT b + a;"),
    )?;
    let out = stack.cli(&["deploy", "add_atomic", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_ne!(public_catalog(&client).await?, first);
    let out = stack.cli(&["rollback", "add_atomic", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(public_catalog(&client).await?, first);
    let twice: i32 = client
        .query_one("SELECT public.twice(21)", &[])
        .await?
        .get(0);
    assert_eq!(twice, 42);
    Ok(())
}
