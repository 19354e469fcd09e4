//! Issue 15: real code keeps each routine's privileges, comment and owner
//! next to it, in the routine's file. A SECURITY DEFINER function with
//! `REVOKE ALL … FROM PUBLIC` (PostgreSQL's own advice), a GRANT to a role,
//! a COMMENT and an OWNER TO deploys as it is; the catalog says what the
//! file says; an unchanged redeploy leaves it untouched; editing only the
//! COMMENT redeploys; a rollback restores exactly the state before.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;

const ROUTINE: &str = "app.tbl_count(regclass)";

fn file(comment: &str) -> String {
    format!(
        "-- Counts a table's rows with the owner's rights.
CREATE OR REPLACE FUNCTION app.tbl_count(t regclass) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM %s', t) INTO n;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC;          -- PostgreSQL's own advice for SECURITY DEFINER
GRANT EXECUTE ON FUNCTION app.tbl_count(regclass) TO reporting;
COMMENT ON FUNCTION app.tbl_count(regclass) IS '{comment}';
ALTER FUNCTION app.tbl_count(regclass) OWNER TO app_owner;
"
    )
}

/// Who may execute the function, its comment and its owner, as a user
/// would check them in the catalog.
async fn privileges(client: &Client) -> Result<(Vec<String>, Option<String>, String)> {
    let grantees = client
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END \
             FROM pg_proc p, aclexplode(p.proacl) a \
             WHERE p.oid = $1::text::regprocedure AND a.privilege_type = 'EXECUTE' ORDER BY 1",
            &[&ROUTINE],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let row = client
        .query_one(
            "SELECT obj_description(p.oid, 'pg_proc'), p.proowner::regrole::text \
             FROM pg_proc p WHERE p.oid = $1::text::regprocedure",
            &[&ROUTINE],
        )
        .await?;
    Ok((grantees, row.get(0), row.get(1)))
}

/// Everything of the routine a rollback must restore, in one digest; None
/// when it does not exist.
async fn state(client: &Client) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT md5(pg_get_functiondef(p.oid) || '|' || coalesce(p.proacl::text, '') || '|' || \
                    coalesce(obj_description(p.oid, 'pg_proc'), '') || '|' || p.proowner::regrole::text) \
             FROM pg_proc p WHERE p.oid = to_regprocedure($1)",
            &[&ROUTINE],
        )
        .await?
        .map(|row| row.get(0)))
}

#[tokio::test]
async fn a_security_definer_function_deploys_with_its_revoke_grant_comment_and_owner() -> Result<()>
{
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE ROLE reporting NOLOGIN;
             CREATE ROLE app_owner NOLOGIN;
             GRANT USAGE ON SCHEMA app TO reporting;",
        )
        .await?;
    stack.write_procedure("tbl_count.sql", &file("rows of a table"))?;

    let out = stack.cli(&["deploy", "tbl_count", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(
            "0 grant(s) applied, 4 GRANT/REVOKE/COMMENT/OWNER statement(s) from the files"
        ),
        "the grants step counts the file's statements\n{out}"
    );
    assert!(
        out.stdout.contains("app.tbl_count(regclass) [created]"),
        "{out}"
    );
    let (grantees, comment, owner) = privileges(&client).await?;
    // PUBLIC may no longer execute it: only its owner and `reporting`.
    assert_eq!(grantees, ["app_owner", "reporting"]);
    assert_eq!(comment.as_deref(), Some("rows of a table"));
    assert_eq!(owner, "app_owner");
    let executable = |role: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
                    &[&role, &ROUTINE],
                )
                .await?;
            anyhow::Ok(row.get::<_, bool>(0))
        }
    };
    assert!(executable("reporting").await?);
    assert!(!executable("public").await?, "REVOKE … FROM PUBLIC applied");
    let first = state(&client).await?;
    assert!(first.is_some());

    // The same file again: nothing to do.
    let again = stack.cli(&["deploy", "tbl_count", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again.stdout.contains("app.tbl_count(regclass) [unchanged]"),
        "{again}"
    );
    assert_eq!(state(&client).await?, first);

    // Only the COMMENT changes: that is a change, and it is deployed.
    stack.write_procedure("tbl_count.sql", &file("rows of a table, exactly"))?;
    let out = stack.cli(&["deploy", "tbl_count", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("app.tbl_count(regclass) [replaced]"),
        "{out}"
    );
    let (grantees, comment, owner) = privileges(&client).await?;
    assert_eq!(comment.as_deref(), Some("rows of a table, exactly"));
    assert_eq!(grantees, ["app_owner", "reporting"]);
    assert_eq!(owner, "app_owner");
    assert_ne!(state(&client).await?, first);

    // The rollback restores exactly the first state: definition, ACL,
    // comment and owner.
    let out = stack.cli(&["rollback", "app.tbl_count", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(state(&client).await?, first);
    let (_, comment, _) = privileges(&client).await?;
    assert_eq!(comment.as_deref(), Some("rows of a table"));
    Ok(())
}

#[tokio::test]
async fn a_companion_that_fails_rolls_the_whole_deploy_back() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    // No role `reporting` and no `app_owner`: the GRANT fails in the
    // deploy's transaction, after the CREATE.
    client.batch_execute("CREATE SCHEMA app;").await?;
    stack.write_procedure("tbl_count.sql", &file("rows of a table"))?;
    // The dry run (the syntax gate's check) runs them too, and says so.
    let check = stack.cli(&["check", "tbl_count", "dev"]).await?;
    assert_ne!(check.code, 0, "{check}");
    assert!(
        check
            .to_string()
            .contains("role \"reporting\" does not exist"),
        "{check}"
    );
    assert_eq!(state(&client).await?, None, "a dry run changes nothing");
    let out = stack.cli(&["deploy", "tbl_count", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.to_string().contains("reporting"), "{out}");
    assert_eq!(state(&client).await?, None, "nothing was created");
    Ok(())
}
