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
/// in the schema: what a DBA compares.
async fn catalog(client: &Client) -> Result<Vec<(String, String, String)>> {
    Ok(client
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(p.proacl::text, ''), \
                    md5(pg_get_functiondef(p.oid)) \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'Billing Core' ORDER BY 1",
            &[],
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
