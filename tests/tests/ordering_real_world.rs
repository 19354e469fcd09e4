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
