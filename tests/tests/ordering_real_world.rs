//! Real-world routine code as users bring it (issue 15): overload families
//! that call each other, types of other schemas in PL/pgSQL, broken files
//! next to good ones, plain `CREATE FUNCTION` files deployed again.

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{PgCluster, Stack};

/// The overload family, as written (plain CREATE, SQL bodies).
const D_SQL: &str = "\
CREATE FUNCTION public.d(text) RETURNS text LANGUAGE sql AS $$ SELECT $1 $$;
CREATE FUNCTION public.d(anyelement) RETURNS text LANGUAGE sql AS $$ SELECT d($1::text) $$;
CREATE FUNCTION public.d(VARIADIC text[]) RETURNS text LANGUAGE sql AS $$ SELECT d(array_to_string($1, '')) $$;
";

/// The same family with PL/pgSQL bodies, which PostgreSQL does not check at CREATE.
const DP_PLPGSQL: &str = "\
CREATE FUNCTION public.dp(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN $1; END $$;
CREATE FUNCTION public.dp(anyelement) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN dp($1::text); END $$;
CREATE FUNCTION public.dp(VARIADIC text[]) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN dp(array_to_string($1, '')); END $$;
";

fn write_list(stack: &Stack, name: &str, text: &str) -> Result<String> {
    let path = stack.dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// `identity md5(pg_get_functiondef)` of every routine of these names.
async fn definitions(client: &Client, names: &[&str]) -> Result<Vec<String>> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    Ok(client
        .query(
            "SELECT p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid)) \
             FROM pg_proc p WHERE p.proname = ANY($1) ORDER BY 1",
            &[&names],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

fn project_arg(stack: &Stack) -> String {
    stack.project.to_string_lossy().into_owned()
}

#[tokio::test]
async fn an_overload_family_calling_itself_deploys_as_psql_applies_it() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure("d.sql", D_SQL)?;
    stack.write_procedure("dp.sql", DP_PLPGSQL)?;
    let list = write_list(&stack, "family.txt", "d\ndp\n")?;

    let dry = stack.cli(&["batch", "dev", &list, "--dry-run"]).await?;
    assert_eq!(dry.code, 0, "no cycle is invented:\n{dry}");
    let order: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(order.len(), 6, "{dry}");
    let at = |identity: &str| {
        order
            .iter()
            .position(|line| line.contains(identity))
            .unwrap_or_else(|| panic!("{identity} in the order:\n{dry}"))
    };
    assert!(
        at("public.d(text)") < at("public.d(anyelement)"),
        "d(anyelement) calls d(text), an exact match, so it comes after it:\n{dry}"
    );

    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    let client = stack.zone("dev").pg.connect().await?;
    let answer: String = client
        .query_one("SELECT d(42), dp(VARIADIC ARRAY['a', 'b'])", &[])
        .await
        .map(|row| format!("{} {}", row.get::<_, String>(0), row.get::<_, String>(1)))?;
    assert_eq!(answer, "42 ab");

    // `deploy d` alone (all three overloads) is ordered by the controller.
    let again = stack.cli(&["deploy", "d", "dev"]).await?;
    assert_eq!(again.code, 0, "{again}");

    // The catalog is what `psql -1 -f` of the same files makes.
    let reference = PgCluster::start("reference").await?;
    let script = stack.dir.path().join("reference.sql");
    std::fs::write(&script, format!("BEGIN;\n{D_SQL}{DP_PLPGSQL}COMMIT;\n"))?;
    reference.psql_file(&script).await?;
    let expected = definitions(&reference.connect().await?, &["d", "dp"]).await?;
    assert_eq!(expected.len(), 6);
    assert_eq!(definitions(&client, &["d", "dp"]).await?, expected);
    Ok(())
}

#[tokio::test]
async fn a_type_of_another_schema_in_plpgsql_is_left_to_the_server() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE SCHEMA geo; CREATE TYPE geo.point2 AS (x integer, y integer); \
             GRANT USAGE ON SCHEMA geo TO PUBLIC;",
        )
        .await?;
    stack.write_procedure(
        "shift.sql",
        "CREATE OR REPLACE FUNCTION geo.shift(p geo.point2, by_x integer) RETURNS geo.point2\n\
         LANGUAGE plpgsql AS $$\n\
         DECLARE\n  moved geo.point2;\n\
         BEGIN\n  moved := p;\n  moved.x := moved.x + by_x;\n  RETURN moved;\nEND\n$$;\n",
    )?;
    let out = stack.cli(&["deploy", "geo.shift", "dev"]).await?;
    assert_eq!(
        out.code, 0,
        "an offline-parser limitation never blocks:\n{out}"
    );
    assert!(
        out.stderr
            .contains("warning: procedures/shift.sql:1:1: the offline PL/pgSQL parse cannot judge"),
        "the limitation is a warning:\n{out}"
    );
    let x: i32 = client
        .query_one("SELECT (geo.shift(ROW(1, 2)::geo.point2, 5)).x", &[])
        .await?
        .get(0);
    assert_eq!(x, 6);

    // A real error in such a body is still caught — by the server.
    stack.write_procedure(
        "shift.sql",
        "CREATE OR REPLACE FUNCTION geo.shift(p geo.point2, by_x integer) RETURNS geo.point2\n\
         LANGUAGE plpgsql AS $$\nDECLARE\n  moved geo.point2;\nBEGIN\n  moved := p\n  RETURN moved;\nEND\n$$;\n",
    )?;
    let broken = stack.cli(&["deploy", "geo.shift", "dev"]).await?;
    assert_eq!(broken.code, 2, "CREATE refuses the syntax error:\n{broken}");
    let x: i32 = client
        .query_one("SELECT (geo.shift(ROW(1, 2)::geo.point2, 5)).x", &[])
        .await?
        .get(0);
    assert_eq!(x, 6, "nothing changed");
    Ok(())
}

#[tokio::test]
async fn a_broken_file_blocks_only_the_plans_that_contain_it() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure(
        "good.sql",
        "CREATE OR REPLACE FUNCTION public.good() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n",
    )?;
    stack.write_procedure(
        "broken_syntax.sql",
        "CREATE OR REPLACE FUNCTION public.broken_syntax() RETURNS integer\nLANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1\nEND\n$$;\n",
    )?;
    stack.write_procedure(
        "broken_sql_body.sql",
        "CREATE OR REPLACE FUNCTION public.broken_sql_body() RETURNS integer\nLANGUAGE sql AS $$\n  SELECT 1,\n  FROM nowhere\n$$;\n",
    )?;
    stack.write_procedure("broken_statement.sql", "CREATE TABLE oops (x int);\n")?;

    for args in [
        vec!["deploy", "good", "dev"],
        vec!["smoke", "good", "dev"],
        vec!["plan", "good"],
    ] {
        let out = stack.cli(&args).await?;
        assert_eq!(out.code, 0, "{args:?} ignores the broken files:\n{out}");
    }

    let out = stack.cli(&["deploy", "broken_sql_body", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("procedures/broken_sql_body.sql:4:3: syntax error at or near \"FROM\" (in the SQL body)"),
        "a SQL body's error has file:line:col:\n{out}"
    );

    let list = write_list(
        &stack,
        "all.txt",
        "good\nbroken_syntax\nbroken_sql_body\nbroken_statement\n",
    )?;
    let batch = stack.cli(&["batch", "dev", &list, "--dry-run"]).await?;
    assert_eq!(batch.code, 1, "{batch}");
    for expected in [
        "procedures/broken_syntax.sql:5:4: syntax error at end of input (in the PL/pgSQL body)",
        "procedures/broken_sql_body.sql:4:3:",
        "procedures/broken_statement.sql:1:1: CREATE TABLE statement is not allowed",
    ] {
        assert!(
            batch.stderr.contains(expected),
            "every problem is listed, {expected:?} too:\n{batch}"
        );
    }

    let lint = stack
        .cli(&["lint", "--project", &project_arg(&stack)])
        .await?;
    assert_eq!(lint.code, 1, "{lint}");
    assert!(
        lint.stdout.contains("lint: 3 error(s)"),
        "lint lists the whole project's problems:\n{lint}"
    );
    for file in [
        "broken_syntax.sql:5:4",
        "broken_sql_body.sql:4:3",
        "broken_statement.sql:1:1",
    ] {
        assert!(lint.stdout.contains(file), "{file}:\n{lint}");
    }
    for file in [
        "broken_syntax.sql",
        "broken_sql_body.sql",
        "broken_statement.sql",
    ] {
        std::fs::remove_file(stack.project.join("procedures").join(file))?;
    }
    let clean = stack
        .cli(&["lint", "--project", &project_arg(&stack)])
        .await?;
    assert_eq!(clean.code, 0, "{clean}");
    Ok(())
}

#[tokio::test]
async fn a_plain_create_file_deploys_again_after_an_edit() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let first = "CREATE FUNCTION public.plain(n integer) RETURNS integer\nLANGUAGE sql AS $$ SELECT n + 1 $$;\n";
    stack.write_procedure("plain.sql", first)?;
    let out = stack.cli(&["deploy", "plain", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    stack.write_procedure("plain.sql", &first.replace("n + 1", "n + 2"))?;
    let again = stack.cli(&["deploy", "plain", "dev"]).await?;
    assert_eq!(
        again.code, 0,
        "a plain CREATE is applied as CREATE OR REPLACE:\n{again}"
    );
    let client = stack.zone("dev").pg.connect().await?;
    let row = client
        .query_one(
            "SELECT public.plain(1), prosrc FROM pg_proc WHERE proname = 'plain'",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(
        row.get::<_, String>(1),
        " SELECT n + 2 ",
        "the body is the file's"
    );
    Ok(())
}

/// Item 9: a deploy of one routine parses the files that may define it, not
/// the whole project (the CLI says how many it parsed).
#[tokio::test]
async fn a_deploy_of_one_routine_parses_only_its_own_files() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    for n in 0..60 {
        stack.write_procedure(
            &format!("filler_{n:02}.sql"),
            &format!("CREATE OR REPLACE FUNCTION public.filler_{n:02}() RETURNS integer LANGUAGE sql AS $$ SELECT {n} $$;\n"),
        )?;
    }
    stack.write_procedure(
        "lonely.sql",
        "CREATE OR REPLACE FUNCTION public.lonely() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;\n",
    )?;
    let out = stack.cli(&["deploy", "lonely", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let parsed = out
        .stdout
        .split("(parsed ")
        .nth(1)
        .and_then(|rest| rest.split(" file(s))").next())
        .context("no parsed count")?;
    let (read, total) = parsed.split_once(" of ").context("count")?;
    assert_eq!(read, "1", "{out}");
    assert!(total.parse::<usize>()? > 60, "{out}");
    Ok(())
}

/// pgq's `get_queue_info.sql` shape: `drop function if exists` of each
/// overload the file then creates, so that a re-run can change the return
/// type. Version 2 adds an OUT column to `qinfo()`.
fn qinfo_file(version: u8) -> String {
    let extra = if version == 2 { ", out n integer" } else { "" };
    let value = if version == 2 {
        "'a'::text, 1, 2"
    } else {
        "'a'::text, 1"
    };
    format!(
        "drop function if exists public.qinfo();\n\
         drop function if exists public.qinfo(text);\n\n\
         create or replace function public.qinfo(out queue_name text, out ticks integer{extra})\n\
         returns setof record\n\
         language sql as $$ select {value} $$;\n\
         create or replace function public.qinfo(in i_name text, out queue_name text, out ticks integer)\n\
         returns setof record language sql as $$ select i_name, 1 $$;\n"
    )
}

#[tokio::test]
async fn a_drop_if_exists_before_its_create_deploys_as_psql_applies_it() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure("qinfo.sql", &qinfo_file(1))?;
    let first = stack.cli(&["deploy", "qinfo", "dev"]).await?;
    assert_eq!(first.code, 0, "the file deploys as it is:\n{first}");
    assert!(
        first.stderr.contains(
            "procedures/qinfo.sql:4:1: `drop function if exists public.qinfo()` (line 1) is not \
             run: pgrollout replaces public.qinfo() in place"
        ),
        "the DROP's fate is said where the routine is:\n{first}"
    );
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE ROLE qinfo_reader; GRANT EXECUTE ON FUNCTION public.qinfo() TO qinfo_reader",
        )
        .await?;

    // The return type changes: PostgreSQL refuses the replace, so the deploy
    // drops and recreates qinfo() — the privilege granted by hand is kept.
    stack.write_procedure("qinfo.sql", &qinfo_file(2))?;
    let second = stack.cli(&["deploy", "qinfo", "dev"]).await?;
    assert_eq!(second.code, 0, "{second}");
    let changes: Vec<String> = client
        .query(
            "SELECT identity || ' ' || change FROM pgrollout.ledger \
             WHERE rollout_id = (SELECT rollout_id FROM pgrollout.ledger ORDER BY id DESC LIMIT 1) \
             ORDER BY identity",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        changes,
        ["public.qinfo() recreated", "public.qinfo(text) unchanged"],
        "{second}"
    );
    let row = client
        .query_one("SELECT n FROM public.qinfo()", &[])
        .await?;
    assert_eq!(row.get::<_, i32>(0), 2);
    let granted: bool = client
        .query_one(
            "SELECT has_function_privilege('qinfo_reader', 'public.qinfo()', 'EXECUTE')",
            &[],
        )
        .await?
        .get(0);
    assert!(granted, "owner, ACL and comment are carried over");

    // The definitions are what psql makes of the same two files in turn.
    let reference = PgCluster::start("reference").await?;
    for version in [1, 2] {
        let script = stack.dir.path().join(format!("qinfo{version}.sql"));
        std::fs::write(&script, qinfo_file(version))?;
        reference.psql_file(&script).await?;
    }
    let expected = definitions(&reference.connect().await?, &["qinfo"]).await?;
    assert_eq!(expected.len(), 2);
    assert_eq!(definitions(&client, &["qinfo"]).await?, expected);

    // Deployed again as it is: nothing to do.
    let third = stack.cli(&["deploy", "qinfo", "dev"]).await?;
    assert_eq!(third.code, 0, "{third}");
    assert!(
        third
            .stdout
            .contains("Routines: public.qinfo() [unchanged], public.qinfo(text) [unchanged]"),
        "{third}"
    );
    Ok(())
}

#[tokio::test]
async fn a_drop_that_would_remove_a_routine_is_refused_before_any_change() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let create =
        "CREATE OR REPLACE FUNCTION public.kept() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n";
    stack.write_procedure("kept.sql", create)?;
    let out = stack.cli(&["deploy", "kept", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let client = stack.zone("dev").pg.connect().await?;
    let ledger_rows = "SELECT count(*) FROM pgrollout.ledger";
    let before: i64 = client.query_one(ledger_rows, &[]).await?.get(0);

    for (file, expected) in [
        (
            format!(
                "{}DROP FUNCTION public.kept();\n",
                create.replace("'SELECT 1'", "'SELECT 2'")
            ),
            "procedures/kept.sql:2:1: `DROP FUNCTION public.kept()` drops public.kept(), which \
             this file creates before it",
        ),
        (
            format!("DROP FUNCTION IF EXISTS public.gone(integer);\n{create}"),
            "procedures/kept.sql:1:1: `DROP FUNCTION IF EXISTS public.gone(integer)` drops \
             public.gone(integer), which this file does not create",
        ),
        (
            format!("DROP FUNCTION IF EXISTS public.kept() CASCADE;\n{create}"),
            "procedures/kept.sql:1:1: DROP FUNCTION IF EXISTS statement is not allowed in a \
             procedure file: CASCADE would drop what depends on the routine",
        ),
    ] {
        stack.write_procedure("kept.sql", &file)?;
        let out = stack.cli(&["deploy", "kept", "dev"]).await?;
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains(expected), "{expected}\n{out}");
    }
    let after: i64 = client.query_one(ledger_rows, &[]).await?.get(0);
    assert_eq!(after, before, "no plan ran");
    let value: i32 = client.query_one("SELECT public.kept()", &[]).await?.get(0);
    assert_eq!(value, 1);
    Ok(())
}

/// A script written for psql: session settings, its own transaction, and the
/// routine hardened by ALTER FUNCTION after its CREATE.
fn hardened_file(security_definer: bool) -> String {
    let definer = if security_definer {
        "ALTER FUNCTION public.hardened(regclass) SECURITY DEFINER;\n"
    } else {
        ""
    };
    // psql's usual first line: a deploy stops at the first error anyway.
    format!(
        "\\set ON_ERROR_STOP on\n\
         SET client_min_messages = warning;\n\
         SET check_function_bodies = false;\n\
         BEGIN;\n\
         CREATE OR REPLACE FUNCTION public.hardened(t regclass) RETURNS bigint LANGUAGE plpgsql\n\
         AS $$ BEGIN RETURN pg_catalog.length(t::text); END $$;\n\
         ALTER FUNCTION public.hardened(regclass) SET search_path = pg_catalog, pg_temp;\n\
         {definer}\
         ALTER FUNCTION public.hardened(regclass) COST 7;\n\
         COMMIT;\n"
    )
}

#[tokio::test]
async fn a_psql_script_with_its_transaction_and_alter_options_deploys_as_psql_applies_it(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let reference = PgCluster::start("reference").await?;
    let client = stack.zone("dev").pg.connect().await?;
    let reference_client = reference.connect().await?;
    let attributes = "SELECT prosecdef, proconfig::text, procost::integer FROM pg_proc \
                      WHERE proname = 'hardened'";
    for (round, security_definer) in [(1, true), (2, false)] {
        stack.write_procedure("hardened.sql", &hardened_file(security_definer))?;
        let out = stack.cli(&["deploy", "hardened", "dev"]).await?;
        assert_eq!(
            out.code, 0,
            "round {round}: the script deploys as it is:\n{out}"
        );
        assert!(
            out.stderr.contains(
                "procedures/hardened.sql:5:1: `SET check_function_bodies = false` (line 3) is not \
                 run: pgrollout validates every body"
            ),
            "{out}"
        );
        let script = stack.dir.path().join(format!("hardened{round}.sql"));
        std::fs::write(&script, hardened_file(security_definer))?;
        reference.psql_file(&script).await?;
        assert_eq!(
            definitions(&client, &["hardened"]).await?,
            definitions(&reference_client, &["hardened"]).await?,
            "round {round}"
        );
        let row = client.query_one(attributes, &[]).await?;
        assert_eq!(row.get::<_, bool>(0), security_definer, "round {round}");
        assert_eq!(
            row.get::<_, Option<String>>(1).as_deref(),
            Some("{\"search_path=pg_catalog, pg_temp\"}")
        );
        assert_eq!(row.get::<_, i32>(2), 7);
        let again = stack.cli(&["deploy", "hardened", "dev"]).await?;
        assert_eq!(again.code, 0, "{again}");
        assert!(
            again
                .stdout
                .contains("Routines: public.hardened(regclass) [unchanged]"),
            "round {round}: the options are part of the source, so nothing changed:\n{again}"
        );
    }
    Ok(())
}

/// Files saved by a Windows editor: a UTF-8 byte order mark and CRLF line
/// ends, in the routine's file and in the batch's list. psql reads them.
#[tokio::test]
async fn files_with_a_byte_order_mark_and_crlf_deploy_as_psql_applies_them() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let text = "\u{feff}CREATE OR REPLACE FUNCTION public.bom(a integer)\r\nRETURNS integer LANGUAGE plpgsql AS $$\r\nBEGIN\r\n  RETURN a + 1;\r\nEND $$;\r\n";
    stack.write_procedure("bom.sql", text)?;
    let list = write_list(&stack, "bom.txt", "\u{feff}bom\r\n")?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    let reference = PgCluster::start("reference").await?;
    let script = stack.dir.path().join("bom.sql");
    std::fs::write(&script, text)?;
    reference.psql_file(&script).await?;
    let client = stack.zone("dev").pg.connect().await?;
    let expected = definitions(&reference.connect().await?, &["bom"]).await?;
    assert_eq!(expected.len(), 1);
    assert_eq!(definitions(&client, &["bom"]).await?, expected);
    Ok(())
}

/// A library whose every file drops its routine before creating it deploys
/// in one batch, and the report is not buried under one warning per file.
#[tokio::test]
async fn a_batch_says_the_first_warnings_and_counts_the_rest() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let mut list = String::new();
    for n in 0..12 {
        stack.write_procedure(
            &format!("w{n}.sql"),
            &format!(
                "DROP FUNCTION IF EXISTS public.w{n}();\n\
                 CREATE FUNCTION public.w{n}() RETURNS integer LANGUAGE sql AS 'SELECT {n}';\n"
            ),
        )?;
        list.push_str(&format!("w{n}\n"));
    }
    let list = write_list(&stack, "w.txt", &list)?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stderr.matches("pgrollout: warning: ").count(),
        10,
        "{out}"
    );
    assert!(
        out.stderr
            .contains("pgrollout: … and 2 more warning(s): `pgrollout lint` lists them all"),
        "{out}"
    );
    let lint = stack
        .cli(&["lint", "--project", &project_arg(&stack)])
        .await?;
    assert_eq!(lint.stdout.matches("is not run").count(), 12, "{lint}");
    Ok(())
}
