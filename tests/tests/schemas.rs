//! Schemas and search_path as PostgreSQL has them (issue 15, "seen" 1): a
//! project declares the schema its unqualified code belongs in and the
//! search path it is written for; the target database's own default search
//! path never decides where code lands or what the ledger calls it.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::Stack;

/// A small library written the way extension code is: no schema in its
/// names, siblings called unqualified from SQL bodies (which PostgreSQL
/// resolves while creating them), a type from another schema as return and
/// parameter type, a PL/pgSQL routine and one with its own `SET search_path`.
const TAP_LIBRARY: [(&str, &str); 6] = [
    (
        "pg_version",
        "CREATE OR REPLACE FUNCTION pg_version() RETURNS text LANGUAGE sql\n\
         AS $$ SELECT current_setting('server_version') $$;",
    ),
    (
        "ok",
        "CREATE OR REPLACE FUNCTION ok(boolean, text) RETURNS text LANGUAGE sql\n\
         AS $$ SELECT CASE WHEN $1 THEN 'ok - ' ELSE 'not ok - ' END || $2 $$;",
    ),
    (
        "has_version",
        "CREATE OR REPLACE FUNCTION has_version() RETURNS text LANGUAGE sql\n\
         AS $$ SELECT ok(pg_version() IS NOT NULL, 'version known') $$;",
    ),
    (
        "version_info",
        "CREATE OR REPLACE FUNCTION version_info() RETURNS types.version_info LANGUAGE sql\n\
         AS $$ SELECT ROW(split_part(pg_version(), '.', 1)::integer, pg_version())::types.version_info $$;\n\
         CREATE OR REPLACE FUNCTION version_info(v types.version_info) RETURNS text LANGUAGE sql\n\
         AS $$ SELECT ok(v.major > 0, v.full_text) $$;",
    ),
    (
        "diag",
        "CREATE OR REPLACE FUNCTION diag(message text) RETURNS text LANGUAGE plpgsql\n\
         AS $$ BEGIN RETURN ok(true, message); END $$;",
    ),
    (
        "thing_count",
        "CREATE OR REPLACE FUNCTION thing_count() RETURNS bigint LANGUAGE sql\n\
         SET search_path = public\n\
         AS $$ SELECT count(*) FROM things $$;",
    ),
];

/// What the target holds before any deploy: the schemas, a type the
/// library uses, a table only its own `SET search_path` finds, and a
/// database default search path that points elsewhere.
async fn prepare_target(client: &Client, dbname: &str, default_path: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA tap; CREATE SCHEMA types; CREATE SCHEMA elsewhere;
             CREATE TYPE types.version_info AS (major integer, full_text text);
             CREATE TABLE public.things (id integer); INSERT INTO public.things VALUES (1), (2);
             ALTER DATABASE \"{dbname}\" SET search_path = {default_path};
             -- This session reads the catalog with every name qualified.
             SET search_path = pg_catalog;"
        ))
        .await?;
    Ok(())
}

/// A stack whose dev database is prepared (default search path
/// `default_path`), with `project_file` as the project's `pgrollout.toml`
/// when given, and a catalog session on that database.
async fn stack_for(default_path: &str, project_file: Option<&str>) -> Result<(Stack, Client)> {
    let stack = Stack::start(&["dev"]).await?;
    let dev = &stack.zone("dev").pg;
    let client = dev.connect().await?;
    prepare_target(&client, dev.dbname(), default_path).await?;
    if let Some(text) = project_file {
        std::fs::write(stack.project.join("pgrollout.toml"), text)?;
    }
    Ok((stack, client))
}

/// The `regprocedure` of every routine named `name`, schema-qualified (the
/// session searches only pg_catalog).
async fn routines_named(client: &Client, name: &str) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = $1 ORDER BY 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The ledger's identities, in order.
async fn ledger_identities(client: &Client) -> Result<Vec<String>> {
    Ok(client
        .query("SELECT identity FROM pgrollout.ledger ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

#[tokio::test]
async fn unqualified_code_lands_in_the_schema_its_project_declares_and_is_recorded_there(
) -> Result<()> {
    let (stack, client) = stack_for(
        "tap",
        Some("[schema]\nname = \"tap\"\nsearch_path = [\"tap\", \"types\"]\n"),
    )
    .await?;
    for (name, sql) in TAP_LIBRARY {
        stack.write_procedure(&format!("{name}.sql"), sql)?;
    }
    // Smoke tests written as the library's users write calls: unqualified.
    stack.write_procedure(
        "has_version.toml",
        "[[smoke_tests]]\nname = \"knows its version\"\ncall = \"SELECT has_version() AS result\"\n\
         expect_columns = [ { name = \"result\", type = \"text\" } ]\n",
    )?;
    stack.write_procedure(
        "diag.toml",
        "[[smoke_tests]]\nname = \"says ok\"\ncall = \"SELECT diag('hello') AS line\"\n",
    )?;
    let list = stack.dir.path().join("library.txt");
    std::fs::write(
        &list,
        "thing_count\ndiag\nversion_info\nhas_version\nok\npg_version\n",
    )?;
    let list = list.to_string_lossy().into_owned();

    let dry_run = stack
        .cli(&["check", "has_version", "ok", "pg_version", "dev"])
        .await?;
    assert_eq!(
        dry_run.code, 0,
        "the dry run validates with the path: {dry_run}"
    );

    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    for identity in [
        "tap.pg_version()",
        "tap.ok(boolean, text)",
        "tap.has_version()",
        "tap.version_info()",
        "tap.version_info(types.version_info)",
        "tap.diag(text)",
        "tap.thing_count()",
    ] {
        let reported = out
            .stdout
            .lines()
            .any(|line| line.contains(&format!(" {identity} ")) && line.contains("[ok] deployed"));
        assert!(reported, "{identity} deployed in {out}");
    }
    assert_eq!(
        routines_named(&client, "pg_version").await?,
        ["tap.pg_version()"]
    );
    assert_eq!(
        routines_named(&client, "version_info").await?,
        ["tap.version_info()", "tap.version_info(types.version_info)"]
    );
    // Called as its users call it: on a session of the database, whose
    // default search path is the library's (the bodies resolve their calls
    // with the caller's path, as in PostgreSQL), except the routine that
    // sets its own.
    let user = stack.zone("dev").pg.connect().await?;
    let answer: String = user
        .query_one("SELECT version_info(version_info())", &[])
        .await?
        .get(0);
    let major = stack.zone("dev").pg.server_major().await?;
    assert!(answer.starts_with(&format!("ok - {major}")), "{answer}");
    let count: i64 = user.query_one("SELECT thing_count()", &[]).await?.get(0);
    assert_eq!(count, 2, "its own SET search_path found public.things");

    // Recorded fully qualified, whatever the database's search path says.
    let ledger = ledger_identities(&client).await?;
    assert_eq!(ledger.len(), 7, "{ledger:?}");
    assert!(ledger.iter().all(|i| i.starts_with("tap.")), "{ledger:?}");
    assert!(
        ledger.contains(&"tap.version_info(types.version_info)".to_owned()),
        "{ledger:?}"
    );
    let history = stack.cli(&["history", "pg_version", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");
    assert!(history.stdout.contains("tap.pg_version()"), "{history}");

    // A changed body redeploys in place, with its siblings still resolved.
    stack.write_procedure(
        "has_version.sql",
        "CREATE OR REPLACE FUNCTION has_version() RETURNS text LANGUAGE sql\n\
         AS $$ SELECT ok(pg_version() <> '', 'version known (v2)') $$;",
    )?;
    let again = stack.cli(&["deploy", "has_version", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again.stdout.contains("tap.has_version() [replaced]"),
        "{again}"
    );
    Ok(())
}

#[tokio::test]
async fn a_file_can_live_in_another_schema_and_the_project_file_is_checked() -> Result<()> {
    let (stack, client) = stack_for(
        "public",
        Some("[schema]\nname = \"tap\"\nsearch_path = [\"public\", \"tap\"]\n"),
    )
    .await?;
    client.batch_execute("CREATE SCHEMA util").await?;
    stack.write_procedure("pg_version.sql", TAP_LIBRARY[0].1)?;
    stack.write_procedure(
        "shout.sql",
        "CREATE OR REPLACE FUNCTION shout(t text) RETURNS text LANGUAGE sql AS $$ SELECT upper(t) $$;",
    )?;
    stack.write_procedure("shout.toml", "[schema]\nname = \"util\"\n")?;

    // A path that would create the code somewhere else than its schema is
    // refused before anything is sent, with the place to fix.
    let refused = stack.cli(&["deploy", "pg_version", "dev"]).await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("pgrollout.toml:3:")
            && refused
                .stderr
                .contains("search_path must start with the schema \"tap\""),
        "{refused}"
    );
    assert!(routines_named(&client, "pg_version").await?.is_empty());

    std::fs::write(
        stack.project.join("pgrollout.toml"),
        "[schema]\nname = \"tap\"\n",
    )?;
    let out = stack.cli(&["deploy", "pg_version", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack.cli(&["deploy", "shout", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("util.shout(text) [created]"), "{out}");
    assert_eq!(
        routines_named(&client, "shout").await?,
        ["util.shout(text)"]
    );
    assert_eq!(
        routines_named(&client, "pg_version").await?,
        ["tap.pg_version()"]
    );
    Ok(())
}

#[tokio::test]
async fn without_a_declaration_code_lands_in_public_whatever_the_database_search_path() -> Result<()>
{
    let (stack, client) = stack_for("elsewhere, public", None).await?;
    stack.write_procedure(
        "greet.sql",
        "CREATE OR REPLACE FUNCTION greet(who text) RETURNS text LANGUAGE sql AS $$ SELECT 'hello ' || who $$;",
    )?;
    stack.write_procedure(
        "greet.toml",
        "[[smoke_tests]]\nname = \"greets\"\ncall = \"SELECT greet('you') AS line\"\n",
    )?;

    let out = stack.cli(&["deploy", "greet", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("public.greet(text) [created]"), "{out}");
    assert_eq!(
        routines_named(&client, "greet").await?,
        ["public.greet(text)"]
    );
    assert_eq!(ledger_identities(&client).await?, ["public.greet(text)"]);
    Ok(())
}

/// A rollback replays the backup's definition, whose SQL body calls its
/// siblings unqualified: it must not need the session to find them.
#[tokio::test]
async fn a_rollback_restores_code_that_calls_its_siblings_unqualified() -> Result<()> {
    let (stack, client) = stack_for("public", Some("[schema]\nname = \"tap\"\n")).await?;
    for (name, sql) in &TAP_LIBRARY[..3] {
        stack.write_procedure(&format!("{name}.sql"), sql)?;
    }
    for name in ["pg_version", "ok", "has_version"] {
        let out = stack.cli(&["deploy", name, "dev"]).await?;
        assert_eq!(out.code, 0, "{out}");
    }
    stack.write_procedure(
        "has_version.sql",
        "CREATE OR REPLACE FUNCTION has_version() RETURNS text LANGUAGE sql\nAS $$ SELECT ok(true, 'v2') $$;",
    )?;
    let out = stack.cli(&["deploy", "has_version", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack.cli(&["rollback", "has_version", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let restored: String = client
        .query_one(
            "SELECT pg_get_functiondef('tap.has_version()'::regprocedure)",
            &[],
        )
        .await?
        .get(0);
    assert!(restored.contains("'version known'"), "{restored}");
    Ok(())
}

/// A batch's smoke calls are prepared together, in one savepoint, and a
/// call that does not prepare sends the ones after it through again one by
/// one (agent/src/jobs/smoke/pipeline.rs): each call must still resolve its
/// unqualified names under its own routine's search path, both ways, and
/// only the broken call may fail. `which()` is a function in both schemas,
/// returning another type in each: a call prepared under the other
/// routine's path would find the wrong one and fail its column type.
#[tokio::test]
async fn smoke_calls_prepared_together_each_resolve_in_their_own_search_path() -> Result<()> {
    let (stack, client) = stack_for("public", Some("[schema]\nname = \"tap\"\n")).await?;
    client
        .batch_execute(
            "CREATE SCHEMA util; \
             CREATE FUNCTION util.which() RETURNS text LANGUAGE sql AS $$ SELECT 'util' $$;",
        )
        .await?;
    let smoked = |call: &str, returns: &str| {
        format!(
            "[[smoke_tests]]\nname = \"answers\"\ncall = \"{call}\"\n\
             expect_columns = [ {{ name = \"v\", type = \"{returns}\" }} ]\n"
        )
    };
    stack.write_procedure(
        "which.sql",
        "CREATE OR REPLACE FUNCTION which() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;",
    )?;
    stack.write_procedure("which.toml", &smoked("SELECT which() AS v", "integer"))?;
    stack.write_procedure(
        "tap_broken.sql",
        "CREATE OR REPLACE FUNCTION tap_broken() RETURNS integer LANGUAGE sql AS $$ SELECT 2 $$;",
    )?;
    stack.write_procedure(
        "tap_broken.toml",
        &smoked("SELECT tap_no_such() AS v", "integer"),
    )?;
    stack.write_procedure(
        "util_which.sql",
        "CREATE OR REPLACE FUNCTION util_which() RETURNS text LANGUAGE sql AS $$ SELECT which() $$;",
    )?;
    stack.write_procedure(
        "util_which.toml",
        &format!(
            "[schema]\nname = \"util\"\n{}",
            smoked("SELECT which() AS v", "text")
        ),
    )?;
    let list = stack.dir.path().join("answers.txt");
    std::fs::write(&list, "util_which\ntap_broken\nwhich\n")?;
    let list = list.to_string_lossy().into_owned();

    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 3, "{out}");
    let failed: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("SMOKE TEST: "))
        .collect();
    assert_eq!(failed.len(), 1, "only the broken call fails: {out}");
    assert!(failed[0].starts_with("tap.tap_broken()"), "{out}");
    assert!(out.stdout.contains("tap_no_such() does not exist"), "{out}");
    assert!(routines_named(&client, "util_which").await?.is_empty());

    stack.write_procedure(
        "tap_broken.toml",
        &smoked("SELECT tap_broken() AS v", "integer"),
    )?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("3 smoke test(s) passed"), "{out}");
    assert_eq!(
        routines_named(&client, "util_which").await?,
        ["util.util_which()"]
    );
    Ok(())
}

/// `SET search_path FROM CURRENT` captures the path the CREATE ran with:
/// the declared one, never the database's default or the agent's own.
#[tokio::test]
async fn set_search_path_from_current_captures_the_declared_path() -> Result<()> {
    let (stack, client) = stack_for(
        "elsewhere, public",
        Some("[schema]\nname = \"tap\"\nsearch_path = [\"tap\", \"types\"]\n"),
    )
    .await?;
    stack.write_procedure(
        "captured.sql",
        "CREATE OR REPLACE FUNCTION captured() RETURNS text LANGUAGE sql\n\
         SET search_path FROM CURRENT AS $$ SELECT current_setting('search_path') $$;",
    )?;
    let out = stack.cli(&["deploy", "captured", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let row = client
        .query_one(
            "SELECT proconfig::text, tap.captured() FROM pg_proc WHERE proname = 'captured'",
            &[],
        )
        .await?;
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("{\"search_path=tap, types\"}")
    );
    assert_eq!(row.get::<_, String>(1), "tap, types");
    Ok(())
}

/// Oracle-style code (ora2pg keeps it): argument types written as a column's
/// type, `items.id%TYPE`. PostgreSQL resolves them when it runs the CREATE;
/// the plan keeps them as written, and each agent resolves them with the
/// routine's path on its own target — dev's `bigint`, qa's `integer`.
const ITEM_NAME: &str = "\
CREATE OR REPLACE FUNCTION item_name(p_id items.id%TYPE, p_default app.items.name%TYPE DEFAULT 'none')
RETURNS items.name%TYPE LANGUAGE plpgsql STABLE AS $$
DECLARE found items.name%TYPE;
BEGIN
  SELECT name INTO found FROM items WHERE id = p_id;
  RETURN coalesce(found, p_default);
END $$;
";

#[tokio::test]
async fn column_types_as_argument_types_resolve_on_each_target() -> Result<()> {
    let stack = pgrollout_tests::Stack::start_with(pgrollout_tests::StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        ..Default::default()
    })
    .await?;
    std::fs::write(
        stack.project.join("pgrollout.toml"),
        "[schema]\nname = \"app\"\nsearch_path = [\"app\", \"public\"]\n",
    )?;
    let dev = stack.zone("dev").pg.connect().await?;
    let qa = stack.zone("qa").pg.connect().await?;
    for (client, id_type) in [(&dev, "bigint"), (&qa, "integer")] {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA app; CREATE TABLE app.items (id {id_type}, name varchar(40));
                 INSERT INTO app.items VALUES (1, 'bolt'); SET search_path = pg_catalog;"
            ))
            .await?;
    }
    stack.write_procedure("item_name.sql", ITEM_NAME)?;
    stack.write_procedure(
        "item_name.toml",
        "[[smoke_tests]]\nname = \"names the bolt\"\ncall = \"SELECT item_name(1) AS name\"\n",
    )?;

    let out = stack.cli(&["deploy", "item_name", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("app.item_name(items.id%TYPE, app.items.name%TYPE) [created]"),
        "{out}"
    );
    assert_eq!(
        routines_named(&dev, "item_name").await?,
        ["app.item_name(bigint,character varying)"]
    );
    assert_eq!(
        ledger_identities(&dev).await?,
        ["app.item_name(bigint,character varying)"]
    );
    let again = stack.cli(&["deploy", "item_name", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("[unchanged]"), "{again}");

    let out = stack.cli(&["deploy", "item_name", "qa"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        routines_named(&qa, "item_name").await?,
        ["app.item_name(integer,character varying)"]
    );

    // A change, rolled back; then retired by name.
    stack.write_procedure("item_name.sql", &ITEM_NAME.replace("'none'", "'?'"))?;
    let out = stack.cli(&["deploy", "item_name", "dev"]).await?;
    assert!(out.stdout.contains("[replaced]"), "{out}");
    let back = stack.cli(&["rollback", "item_name", "dev"]).await?;
    assert_eq!(back.code, 0, "{back}");
    // (Its body's `items.name%TYPE` is read with the caller's path.)
    dev.batch_execute("SET search_path = app, public").await?;
    let default: String = dev.query_one("SELECT app.item_name(42)", &[]).await?.get(0);
    assert_eq!(default, "none");
    dev.batch_execute("SET search_path = pg_catalog").await?;
    let out = stack
        .cli(&["retire", "item_name", "dev", "--reason", "CHG-1: unused"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(routines_named(&dev, "item_name").await?.is_empty());

    // Where the column does not exist, the deploy says which type it could
    // not find, and nothing changes.
    qa.batch_execute("ALTER TABLE app.items RENAME COLUMN id TO item_id")
        .await?;
    stack.write_procedure("item_name.sql", ITEM_NAME)?;
    let out = stack.cli(&["deploy", "item_name", "qa"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("type \"items.id%TYPE\" does not exist"),
        "{out}"
    );
    Ok(())
}

/// A script that says where it lives the way psql scripts do: a `SET
/// search_path` at its top. Its unqualified CREATEs land in the first
/// schema, its bodies are validated with the whole path (`"$user"` left
/// out), its smoke calls run with it — as `psql -f` of the file does.
const SCRIPT_WITH_PATH: &str = "\
SET client_min_messages = warning;
SET search_path = app, \"$user\", public;
CREATE OR REPLACE FUNCTION lot_label(m mood) RETURNS text LANGUAGE sql AS $$ SELECT 'lot ' || lot_code(m) $$;
CREATE OR REPLACE FUNCTION lot_code(m mood) RETURNS text LANGUAGE sql AS $$ SELECT upper(m::text) $$;
";

#[tokio::test]
async fn a_files_own_set_search_path_declares_where_it_lives() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let setup = "CREATE SCHEMA app; CREATE TYPE public.mood AS ENUM ('calm', 'busy');";
    client.batch_execute(setup).await?;
    stack.write_procedure("lot_label.sql", SCRIPT_WITH_PATH)?;
    stack.write_procedure(
        "lot_label.toml",
        "[[smoke_tests]]\nname = \"labels\"\nroutine = \"lot_label(mood)\"\n\
         call = \"SELECT lot_label('busy') AS label\"\n",
    )?;
    // lot_label calls lot_code unqualified, defined after it in the file:
    // the order is pgrollout's, the path the file's.
    let list = stack.dir.path().join("lots.txt");
    std::fs::write(&list, "lot_label\nlot_code\n")?;
    let out = stack
        .cli(&["batch", "dev", &list.to_string_lossy()])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    client.batch_execute("SET search_path = pg_catalog").await?;
    assert_eq!(
        routines_named(&client, "lot_label").await?,
        ["app.lot_label(public.mood)"]
    );
    // (Its body finds lot_code with the caller's path, as any SQL body.)
    client
        .batch_execute("SET search_path = app, public")
        .await?;
    let label: String = client
        .query_one("SELECT lot_label('busy')", &[])
        .await?
        .get(0);
    assert_eq!(label, "lot BUSY");
    client.batch_execute("SET search_path = pg_catalog").await?;
    let again = stack
        .cli(&["batch", "dev", &list.to_string_lossy()])
        .await?;
    assert!(again.stdout.contains("0 deployed, 2 unchanged"), "{again}");

    // psql applying the same file makes the same definitions.
    let reference = pgrollout_tests::PgCluster::start("reference").await?;
    let reference_client = reference.connect().await?;
    reference_client.batch_execute(setup).await?;
    // psql needs lot_code first; pgrollout's order put it there itself.
    let mut lines: Vec<&str> = SCRIPT_WITH_PATH.lines().collect();
    lines.swap(2, 3);
    let script = stack.dir.path().join("script.sql");
    std::fs::write(&script, lines.join("\n"))?;
    reference.psql_file(&script).await?;
    reference_client
        .batch_execute("SET search_path = pg_catalog")
        .await?;
    let definitions = "SELECT p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid)) \
                       FROM pg_proc p WHERE p.pronamespace = 'app'::regnamespace ORDER BY 1";
    let ours: Vec<String> = client
        .query(definitions, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let theirs: Vec<String> = reference_client
        .query(definitions, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ours.len(), 2);
    assert_eq!(ours, theirs);
    Ok(())
}

#[tokio::test]
async fn two_routines_whose_types_are_the_same_on_a_target_are_refused_as_one() -> Result<()> {
    // `items.id%TYPE` is `integer` here: the file's two overloads are one
    // routine on this target, the second CREATE replacing the first.
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute("CREATE TABLE public.items (id integer)")
        .await?;
    stack.write_procedure(
        "twice.sql",
        "CREATE FUNCTION twice(p items.id%TYPE) RETURNS integer LANGUAGE sql AS 'SELECT p * 2';
CREATE FUNCTION twice(p integer) RETURNS integer LANGUAGE sql AS 'SELECT p + p';
",
    )?;
    let out = stack.cli(&["deploy", "twice", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.to_string().contains(
            "public.twice(integer) (procedures/twice.sql) and public.twice(items.id%TYPE) \
             (procedures/twice.sql) are one routine on this target, public.twice(integer): their \
             argument types name the same types here"
        ),
        "{out}"
    );
    assert!(
        routines_named(&client, "twice").await?.is_empty(),
        "nothing changed"
    );
    Ok(())
}
