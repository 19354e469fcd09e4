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

/// Two routines and one GRANT naming both.
const PAIR: &str = "CREATE FUNCTION pair_a(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION pair_b(b text) RETURNS text LANGUAGE sql AS 'SELECT b';
GRANT EXECUTE ON FUNCTION pair_a(integer), pair_b(text) TO reporting;
";

/// A stack whose dev target has the role `reporting`, and a client of it.
async fn stack_with_reporting_role() -> Result<(Stack, Client)> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute("CREATE ROLE reporting NOLOGIN")
        .await?;
    Ok((stack, client))
}

/// Whether `role` may execute `routine` (a regprocedure text).
async fn may_execute(client: &Client, role: &str, routine: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
            &[&role, &routine],
        )
        .await?
        .get(0))
}

#[tokio::test]
async fn a_companion_naming_a_built_ins_signature_acts_on_the_files_own_routine() -> Result<()> {
    // The agent's role is a superuser here, as in many small shops. The
    // file's own `public.pg_read_file(text)` has the signature of the
    // built-in that reads the server's files; PostgreSQL searches
    // `pg_catalog` before a path that leaves it out, so psql would grant
    // the built-in. pgrollout acts on the file's routine, as the file means.
    let (stack, client) = stack_with_reporting_role().await?;
    stack.write_procedure(
        "pg_read_file.sql",
        "CREATE OR REPLACE FUNCTION pg_read_file(path text) RETURNS text LANGUAGE sql
  AS $$ SELECT 'no file here: ' || path $$;
REVOKE ALL ON FUNCTION pg_read_file(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_read_file(text) TO reporting;
",
    )?;
    let out = stack.cli(&["deploy", "pg_read_file", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("public.pg_read_file(text) [created]"),
        "{out}"
    );
    assert!(may_execute(&client, "reporting", "public.pg_read_file(text)").await?);
    assert!(!may_execute(&client, "public", "public.pg_read_file(text)").await?);
    assert!(
        !may_execute(&client, "reporting", "pg_catalog.pg_read_file(text)").await?,
        "the built-in that reads the server's files was granted"
    );
    Ok(())
}

#[tokio::test]
async fn deploying_one_routine_takes_the_routines_its_grant_also_names() -> Result<()> {
    let (stack, client) = stack_with_reporting_role().await?;
    stack.write_procedure("pair.sql", PAIR)?;
    // Before: `function pair_b(text) does not exist`, exit 2 — the GRANT
    // came with pair_a alone.
    let out = stack.cli(&["deploy", "pair_a", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    for routine in ["public.pair_a(integer)", "public.pair_b(text)"] {
        assert!(
            out.stdout.contains(&format!("{routine} [created]")),
            "{out}"
        );
        assert!(
            may_execute(&client, "reporting", routine).await?,
            "{routine}"
        );
    }
    let again = stack.cli(&["deploy", "pair_b", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again.stdout.contains("public.pair_a(integer) [unchanged]"),
        "{again}"
    );
    assert!(
        again.stdout.contains("public.pair_b(text) [unchanged]"),
        "{again}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deployers_hand_made_plan_cannot_attach_a_statement_about_another_routine() -> Result<()>
{
    use pgrollout_shared::proto::{self, control_client::ControlClient};

    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE FUNCTION public.victim() RETURNS integer LANGUAGE sql AS 'SELECT 1';
             CREATE ROLE mallory NOLOGIN;",
        )
        .await?;
    // The CLI issues the operator's certificate on first use.
    assert_eq!(stack.cli(&["agents"]).await?.code, 0);
    let channel = pgrollout_tests::scripted_agent::channel(
        &stack.operators,
        &stack.ca_dir.join("ca.pem"),
        &stack
            .ca_dir
            .join(format!("operator-{}.pem", pgrollout_tests::stack::OPERATOR)),
        &stack
            .ca_dir
            .join(format!("operator-{}.key", pgrollout_tests::stack::OPERATOR)),
    )
    .await?;
    let mut control = ControlClient::new(channel);
    for statement in [
        "ALTER FUNCTION public.victim() SECURITY DEFINER",
        "ALTER FUNCTION victim() OWNER TO mallory",
        "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO mallory",
        "COMMENT ON FUNCTION victim() IS 'hand-made'",
    ] {
        let routine = proto::Routine {
            schema: "public".to_owned(),
            name: "carrier".to_owned(),
            create_sql: "CREATE OR REPLACE FUNCTION public.carrier() RETURNS integer \
                         LANGUAGE sql AS 'SELECT 1'"
                .to_owned(),
            source_path: "procedures/carrier.sql".to_owned(),
            companion_sql: vec![statement.to_owned()],
            ..Default::default()
        };
        let routines = vec![routine];
        let request = proto::DeployRequest {
            environment: "dev".to_owned(),
            plan: Some(proto::Plan {
                plan_id: pgrollout_shared::plan_id::plan_id(&routines),
                routines,
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = match control.deploy(request).await {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                let mut updates = Vec::new();
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => updates.push(format!("{update:?}")),
                        Ok(None) => anyhow::bail!("{statement}: accepted: {updates:?}"),
                        Err(status) => break status,
                    }
                }
            }
        };
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{statement}: {status:?}"
        );
        assert!(
            status
                .message()
                .contains("which is not a routine this plan deploys"),
            "{statement}: {}",
            status.message()
        );
    }
    let row = client
        .query_one(
            "SELECT p.prosecdef, p.proowner::regrole::text, obj_description(p.oid, 'pg_proc'), \
                    has_function_privilege('mallory', 'pg_read_file(text)', 'EXECUTE'), \
                    to_regprocedure('public.carrier()') IS NULL \
             FROM pg_proc p WHERE p.oid = 'public.victim()'::regprocedure",
            &[],
        )
        .await?;
    assert!(!row.get::<_, bool>(0), "victim became SECURITY DEFINER");
    assert_ne!(row.get::<_, String>(1), "mallory");
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(
        !row.get::<_, bool>(3),
        "mallory may read the server's files"
    );
    assert!(row.get::<_, bool>(4), "nothing of the plan was deployed");
    Ok(())
}

#[tokio::test]
async fn a_grant_naming_two_routines_runs_once_both_exist_when_each_has_its_own_transaction(
) -> Result<()> {
    // `batch --continue-on-error` deploys each routine in a transaction of
    // its own; the GRANT names both, so it can only run once both exist.
    let (stack, client) = stack_with_reporting_role().await?;
    stack.write_procedure("pair.sql", PAIR)?;
    let list = stack.dir.path().join("pair.txt");
    std::fs::write(&list, "pair_a\n")?;
    let out = stack
        .cli(&[
            "batch",
            "dev",
            &list.to_string_lossy(),
            "--continue-on-error",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("2 deployed"), "{out}");
    for routine in ["public.pair_a(integer)", "public.pair_b(text)"] {
        assert!(
            may_execute(&client, "reporting", routine).await?,
            "{routine}"
        );
    }
    // The ledger holds the state the GRANT left for both: nothing to redo.
    let again = stack
        .cli(&[
            "batch",
            "dev",
            &list.to_string_lossy(),
            "--continue-on-error",
        ])
        .await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("0 deployed, 2 unchanged"), "{again}");
    Ok(())
}
