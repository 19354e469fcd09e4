//! Loader tests: each writes a small project into a temporary directory.

use std::path::Path;
use std::time::Duration;

use pgrollout_shared::routine::{Grantee, Privilege, RoutineKind};

use super::*;

/// A project directory holding `files` (paths relative to the root).
fn project_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(PROCEDURES_DIR)).expect("procedures dir");
    for (path, contents) in files {
        std::fs::write(root.path().join(path), contents).expect("write project file");
    }
    root
}

fn load(files: &[(&str, &str)]) -> Result<Project, ProjectError> {
    let root = project_with(files);
    Project::load(root.path()).and_then(Project::strict)
}

fn load_error(files: &[(&str, &str)]) -> String {
    load(files)
        .expect_err("the project must be refused")
        .to_string()
}

fn identities(project: &Project) -> Vec<String> {
    project
        .routines()
        .iter()
        .map(|routine| routine.identity.to_string())
        .collect()
}

const ADDARC_OVERLOADS: &str = "\
-- Adds an arc between two materials.
CREATE OR REPLACE FUNCTION addarc(parent text, child text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM addarc(parent, child, now());
END
$$;

/* The same, at a given time. */
CREATE OR REPLACE FUNCTION public.addarc(parent text, child text, at timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO transition (parent_uid, child_uid, created_at) VALUES (parent, child, at);
END
$$;
";

#[test]
fn a_file_with_overloads_yields_one_routine_each_with_its_own_text() {
    let project = load(&[("procedures/addarc.sql", ADDARC_OVERLOADS)]).expect("loads");
    assert_eq!(
        identities(&project),
        [
            "public.addarc(text, text)",
            "public.addarc(text, text, timestamp with time zone)"
        ]
    );
    let first = &project.routines()[0];
    assert!(first
        .create_sql
        .starts_with("CREATE OR REPLACE FUNCTION addarc(parent text"));
    assert!(
        first.create_sql.ends_with("END\n$$"),
        "{:?}",
        first.create_sql
    );
    let second = &project.routines()[1];
    assert!(second
        .create_sql
        .starts_with("CREATE OR REPLACE FUNCTION public.addarc("));
    assert!(second.create_sql.ends_with("$$"));
    assert!(project
        .routines()
        .iter()
        .all(|r| r.source_path == "procedures/addarc.sql"));
    assert_eq!(project.select("addarc").expect("known").len(), 2);
    assert_eq!(project.select("ADDARC").expect("folded").len(), 2);
    assert_eq!(project.select("public.addarc").expect("qualified").len(), 2);
    let one = project
        .select("addarc(text, text, timestamptz)")
        .expect("one overload");
    assert_eq!(one, vec![second.clone()]);
}

/// The statement as written, but for `OR REPLACE` added to a plain CREATE.
#[test]
fn create_sql_is_the_exact_statement_without_comments_or_semicolon() {
    let sql = "  -- leading comment\n\nCREATE FUNCTION f() RETURNS int\n  LANGUAGE sql AS 'SELECT 1' -- trailing\n;\n\n-- end of file\n";
    let project = load(&[("procedures/f.sql", sql)]).expect("loads");
    assert_eq!(
        project.routines()[0].create_sql,
        "CREATE OR REPLACE FUNCTION f() RETURNS int\n  LANGUAGE sql AS 'SELECT 1'"
    );
    // Without a final semicolon the parser reports the statement as running
    // to the end of the text; trailing comments are still left out.
    let project = load(&[(
        "procedures/f.sql",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'\n-- end\n",
    )])
    .expect("loads");
    assert_eq!(
        project.routines()[0].create_sql,
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    );
}

#[test]
fn sql_standard_bodies_keep_their_inner_semicolons() {
    let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n\
               CREATE FUNCTION g() RETURNS int RETURN 1;\n";
    let project = load(&[("procedures/f.sql", sql)]).expect("loads");
    assert_eq!(
        project.routines()[0].create_sql,
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND"
    );
    assert_eq!(
        project.routines()[1].create_sql,
        "CREATE OR REPLACE FUNCTION g() RETURNS int RETURN 1"
    );
}

#[test]
fn procedures_and_functions_are_told_apart() {
    let project = load(&[(
        "procedures/removearc.sql",
        "CREATE OR REPLACE PROCEDURE removearc(parent text, child text)\nLANGUAGE plpgsql AS $$\nBEGIN\n  DELETE FROM transition WHERE parent_uid = parent AND child_uid = child;\n  COMMIT;\nEND\n$$;\n\
         CREATE FUNCTION arccount() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM transition';\n",
    )])
    .expect("loads");
    let kinds: Vec<RoutineKind> = project.routines().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RoutineKind::Procedure, RoutineKind::Function]);
}

#[test]
fn identity_keeps_input_arguments_rendered_like_postgresql() {
    let sql = "\
CREATE FUNCTION lab.\"Weigh\"(a int, INOUT b numeric(10,2), OUT c int, VARIADIC d varchar[], e int8 DEFAULT 1)
  RETURNS record LANGUAGE sql AS 'SELECT 1, 2';
CREATE FUNCTION lineage(root public.material, depth int4) RETURNS TABLE(uid text, level integer)
  LANGUAGE sql AS 'SELECT 1, 2';
CREATE PROCEDURE measure(IN a bool, OUT b float8, INOUT c timestamp(3))
  LANGUAGE sql AS 'SELECT 1, now()';
";
    let project = load(&[("procedures/mixed.sql", sql)]).expect("loads");
    assert_eq!(
        identities(&project),
        [
            "lab.Weigh(integer, numeric(10,2), character varying[], bigint)",
            "public.lineage(public.material, integer)",
            // OUT arguments are not part of a procedure's identity either
            // (PostgreSQL 15: `p(a int, OUT b int)` is `p(integer)`).
            "public.measure(boolean, timestamp(3) without time zone)",
        ]
    );
    assert_eq!(
        project.routines()[0].identity.regprocedure_input(),
        "\"lab\".\"Weigh\"(integer, numeric(10,2), character varying[], bigint)"
    );
    assert_eq!(
        project.select("lab.\"Weigh\"").expect("quoted name").len(),
        1
    );
    assert!(
        project.select("lab.weigh").is_err(),
        "unquoted folds to lower case"
    );
}

#[test]
fn percent_type_arguments_are_kept_as_written_in_the_identity() {
    let project = load(&[(
        "procedures/f.sql",
        "CREATE FUNCTION f(\n    uid material.uid%TYPE, n int) RETURNS int LANGUAGE sql AS 'SELECT 1';",
    )])
    .expect("loads");
    assert_eq!(
        project.routines()[0].identity.to_string(),
        "public.f(material.uid%TYPE, integer)"
    );
}

#[test]
fn statements_other_than_create_routine_are_refused_with_their_line() {
    let error = load_error(&[(
        "procedures/addarc.sql",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\n\n-- cleanup\nDROP TABLE IF EXISTS transition;\n",
    )]);
    assert!(
        error.starts_with(
            "procedures/addarc.sql:4:1: DROP TABLE IF EXISTS statement is not allowed in a procedure file"
        ),
        "{error}"
    );
    let error = load_error(&[(
        "procedures/seed.sql",
        "  INSERT INTO material VALUES ('M-1');",
    )]);
    assert!(
        error.starts_with("procedures/seed.sql:1:3: INSERT statement is not allowed"),
        "{error}"
    );
}

#[test]
fn an_empty_file_is_refused() {
    let error = load_error(&[("procedures/empty.sql", "-- nothing here yet\n")]);
    assert!(
        error.starts_with("procedures/empty.sql holds no statements"),
        "{error}"
    );
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let sql = "\
CREATE OR REPLACE FUNCTION reconcile(uid text) RETURNS int
LANGUAGE sql AS $$ SELECT 1 $$;

CREATE OR REPLACE FUNCTION reconcile(uid text, depth int) RETURNS int
LANGUAGE sql
AS $$ SELECT 2 $$
RETURNS NULL ON NULL INPUTT;
";
    let error = load_error(&[("procedures/reconcile.sql", sql)]);
    assert_eq!(
        error,
        "procedures/reconcile.sql:7:22: syntax error at or near \"INPUTT\""
    );
    // A repeated token: only the third `uid` is wrong.
    let sql = "CREATE FUNCTION f(uid text) RETURNS text\nLANGUAGE sql AS 'SELECT uid'\n  uid;";
    let error = load_error(&[("procedures/f.sql", sql)]);
    assert_eq!(
        error,
        "procedures/f.sql:3:3: syntax error at or near \"uid\""
    );
    let error = load_error(&[(
        "procedures/f.sql",
        "CREATE FUNCTION f() RETURNS int\nLANGUAGE sql AS $$ SELECT 1;\n",
    )]);
    assert_eq!(
        error,
        "procedures/f.sql:2:17: unterminated dollar-quoted string at or near \"$$ SELECT 1;\n\""
    );
    // Columns count characters, not bytes.
    let sql = "CREATE FUNCTION f() RETURNS text LANGUAGE sql\nAS 'SELECT ''é''' STRICTT;";
    let error = load_error(&[("procedures/f.sql", sql)]);
    assert_eq!(
        error,
        "procedures/f.sql:2:19: syntax error at or near \"STRICTT\""
    );
}

#[test]
fn a_psql_meta_command_is_named_as_such() {
    let sql = "-- for psql\n\\i common.sql\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\n";
    let error = load_error(&[("procedures/f.sql", sql)]);
    assert_eq!(
        error,
        "procedures/f.sql:2:1: syntax error at or near \"\\\": `\\i common.sql` is a psql \
         meta-command, not SQL — pgrollout sends a file's statements to the server itself; remove \
         the line"
    );
    // A backslash inside a statement is just a syntax error.
    let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1' \\x;\n";
    let error = load_error(&[("procedures/f.sql", sql)]);
    assert!(!error.contains("meta-command"), "{error}");
}

#[test]
fn plpgsql_body_errors_name_the_line_in_the_file() {
    let sql = "\
-- reconciles one material
CREATE OR REPLACE FUNCTION reconcile(uid text)
RETURNS integer
LANGUAGE plpgsql AS $body$
DECLARE
  n integer;
BEGIN
  SELECT count(*) INTO n
    FROMM transition WHERE child_uid = uid;
  RETURN n;
END
$body$;
";
    let error = load_error(&[("procedures/reconcile.sql", sql)]);
    assert_eq!(
        error,
        "procedures/reconcile.sql:9:11: syntax error at or near \"transition\" (in the PL/pgSQL body)"
    );
    let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS '\nBEGIN\n  IFF true THEN RETURN 1; END IF;\nEND';";
    let error = load_error(&[("procedures/f.sql", sql)]);
    assert_eq!(
        error,
        "procedures/f.sql:3:3: syntax error at or near \"IFF\" (in the PL/pgSQL body)"
    );
}

#[test]
fn valid_plpgsql_is_not_refused() {
    // Constructs the PL/pgSQL validation must accept, including a trigger
    // function (libpg_query cannot serialise it, which is not an error).
    let sql = "\
CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.created_at := now(); RETURN NEW; END $$;
CREATE FUNCTION f(m public.material, VARIADIC xs int[]) RETURNS SETOF public.material
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  r public.material%ROWTYPE;
  x int;
  n bigint;
BEGIN
  FOREACH x IN ARRAY xs LOOP
    PERFORM pg_sleep(0);
  END LOOP;
  FOR r IN SELECT * FROM public.material LOOP
    RETURN NEXT r;
  END LOOP;
  RETURN QUERY EXECUTE format('SELECT * FROM %I', 'material');
  GET DIAGNOSTICS n = ROW_COUNT;
  RAISE NOTICE 'rows: %', n;
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'duplicate' USING ERRCODE = 'P0001', HINT = 'check';
END $$;
CREATE PROCEDURE p(INOUT total int) LANGUAGE plpgsql AS $$
BEGIN total := total + 1; COMMIT; CALL p(total); END $$;
";
    let project = load(&[("procedures/mixed.sql", sql)]).expect("valid PL/pgSQL loads");
    assert_eq!(project.routines().len(), 3);
}

const RECONCILE_SQL: &str = "\
CREATE FUNCTION reconcilemupstream(uid text) RETURNS integer LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION reconcilemupstream(uid text, depth int) RETURNS integer LANGUAGE sql AS 'SELECT 2';
";

#[test]
fn sidecar_typos_are_refused_naming_the_file() {
    let error = load_error(&[
        ("procedures/addarc.sql", "CREATE FUNCTION addarc() RETURNS int LANGUAGE sql AS 'SELECT 1';"),
        (
            "procedures/addarc.toml",
            "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"perseus_app\"]\n\n[[smoke_tests]]\nname = \"adds\"\ncall = \"SELECT addarc()\"\nmax_durration = \"2s\"\n",
        ),
    ]);
    assert!(
        error.starts_with("procedures/addarc.toml:8:1: unknown field `max_durration`"),
        "{error}"
    );
    let error = load_error(&[
        (
            "procedures/addarc.sql",
            "CREATE FUNCTION addarc() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        (
            "procedures/addarc.toml",
            "[[grants]]\nprivilege = \"SELECT\"\nto = [\"perseus_app\"]\n",
        ),
    ]);
    assert_eq!(
        error,
        "procedures/addarc.toml:2:13: \"SELECT\" is not a routine privilege: use EXECUTE or ALL"
    );
    let error = load_error(&[
        (
            "procedures/addarc.sql",
            "CREATE FUNCTION addarc() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        ("procedures/addark.toml", "depends_on = []\n"),
    ]);
    assert!(
        error.starts_with("procedures/addark.toml has no matching procedures/addark.sql"),
        "{error}"
    );
}

#[test]
fn sidecar_grants_and_smoke_tests_attach_to_their_routines() {
    let sidecar = r#"
depends_on = ["removearc"]

[[grants]]
privilege = "execute"
to = ["perseus_app", "PUBLIC"]

[[smoke_tests]]
name = "one argument"
call = "SELECT * FROM public.reconcilemupstream('M-0001')"
routine = "reconcilemupstream(text)"
expect_columns = [ { name = "reconcilemupstream", type = "int4" } ]

[[smoke_tests]]
name = "two arguments, spelled differently"
call = "SELECT reconcilemupstream('M-0001', 2)"
routine = " Public.ReconcileMUpstream( TEXT,int4 ) "
max_duration = "2s"
allow_warnings = true
"#;
    let project = load(&[
        ("procedures/reconcilemupstream.sql", RECONCILE_SQL),
        ("procedures/reconcilemupstream.toml", sidecar),
        (
            "procedures/removearc.sql",
            "CREATE PROCEDURE removearc() LANGUAGE sql AS 'SELECT 1';",
        ),
    ])
    .expect("loads");
    let [one, two, removearc] = project.routines() else {
        panic!("expected three routines");
    };
    for routine in [one, two] {
        assert_eq!(routine.grants.len(), 2);
        assert_eq!(routine.grants[0].privilege, Privilege::Execute);
        assert_eq!(
            routine.grants[0].grantee,
            Grantee::Role("perseus_app".to_owned())
        );
        assert_eq!(routine.grants[1].grantee, Grantee::Public);
        assert_eq!(project.declared_dependencies(routine), ["removearc"]);
    }
    assert!(removearc.grants.is_empty());
    assert!(project.declared_dependencies(removearc).is_empty());
    assert_eq!(one.smoke_tests.len(), 1);
    assert_eq!(one.smoke_tests[0].name, "one argument");
    assert_eq!(one.smoke_tests[0].max_duration, Duration::from_secs(10));
    assert_eq!(one.smoke_tests[0].expect_columns[0].type_name, "int4");
    assert_eq!(two.smoke_tests.len(), 1);
    assert_eq!(two.smoke_tests[0].max_duration, Duration::from_secs(2));
    assert!(two.smoke_tests[0].allow_warnings);
}

#[test]
fn smoke_test_columns_must_be_type_names() {
    let error = load_error(&[
        ("procedures/addarc.sql", "CREATE FUNCTION addarc() RETURNS int LANGUAGE sql AS 'SELECT 1';"),
        (
            "procedures/addarc.toml",
            "[[smoke_tests]]\nname = \"t\"\ncall = \"SELECT addarc()\"\nexpect_columns = [{ name = \"addarc\", type = \"int; DROP TABLE t\" }]\n",
        ),
    ]);
    assert_eq!(
        error,
        "procedures/addarc.toml:4:45: \"int; DROP TABLE t\" is not a type name, e.g. text or integer"
    );
}

#[test]
fn smoke_tests_of_overloaded_files_must_name_one_routine() {
    let files = |sidecar: &'static str| {
        [
            ("procedures/reconcilemupstream.sql", RECONCILE_SQL),
            ("procedures/reconcilemupstream.toml", sidecar),
        ]
    };
    let error = load_error(&files(
        "[[smoke_tests]]\nname = \"t\"\ncall = \"SELECT 1\"\n",
    ));
    assert!(
        error.starts_with(
            "procedures/reconcilemupstream.toml:2:8: this file defines 2 routines, so smoke test \"t\" must say which one"
        ),
        "{error}"
    );
    let error = load_error(&files(
        "[[smoke_tests]]\nname = \"t\"\ncall = \"SELECT 1\"\nroutine = \"reconcilemupstream\"\n",
    ));
    assert!(error.contains("matches several overloads"), "{error}");
    let error = load_error(&files(
        "[[smoke_tests]]\nname = \"t\"\ncall = \"SELECT 1\"\nroutine = \"reconcilemupstream(bigint)\"\n",
    ));
    assert!(
        error.starts_with(
            "procedures/reconcilemupstream.toml:4:11: routine \"reconcilemupstream(bigint)\" is not defined in this file, which defines public.reconcilemupstream(text), public.reconcilemupstream(text, integer)"
        ),
        "{error}"
    );
    let error = load_error(&files(
        "[[smoke_tests]]\nname = \"t\"\ncall = \"SELECT FROM FROM\"\nroutine = \"reconcilemupstream(text)\"\n",
    ));
    assert!(
        error.starts_with("procedures/reconcilemupstream.toml:3:8: the call does not parse"),
        "{error}"
    );
}

#[test]
fn unknown_procedures_suggest_close_names() {
    let project = load(&[
        ("procedures/addarc.sql", ADDARC_OVERLOADS),
        (
            "procedures/removearc.sql",
            "CREATE PROCEDURE removearc() LANGUAGE sql AS 'SELECT 1';",
        ),
    ])
    .expect("loads");
    let error = project.select("remvearc").expect_err("unknown").to_string();
    assert_eq!(
        error,
        "no function or procedure named \"remvearc\" in the project; did you mean removearc?"
    );
    let error = project
        .select("reconcile")
        .expect_err("unknown")
        .to_string();
    assert_eq!(
        error,
        "no function or procedure named \"reconcile\" in the project; known routines: addarc, removearc"
    );
    let error = project
        .select("addarc(int)")
        .expect_err("no such overload")
        .to_string();
    assert_eq!(
        error,
        "no function or procedure named \"addarc(int)\" in the project; its overloads are \
         public.addarc(text, text), public.addarc(text, text, timestamp with time zone)"
    );
    let error = project
        .select("addarc; DROP TABLE x")
        .expect_err("not a name")
        .to_string();
    assert!(
        error.starts_with("\"addarc; DROP TABLE x\" is not a routine name"),
        "{error}"
    );
}

#[test]
fn unknown_dependencies_are_refused() {
    let error = load_error(&[
        (
            "procedures/addarc.sql",
            "CREATE FUNCTION addarc() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        (
            "procedures/addarc.toml",
            "depends_on = [\"reconcilemupstrem\"]\n",
        ),
        ("procedures/reconcilemupstream.sql", RECONCILE_SQL),
    ]);
    assert_eq!(
        error,
        "procedures/addarc.toml:1:15: depends_on: no function or procedure named \"reconcilemupstrem\" \
         in the project; did you mean reconcilemupstream?"
    );
}

#[test]
fn one_identity_defined_twice_names_both_places() {
    let error = load_error(&[
        ("procedures/addarc.sql", ADDARC_OVERLOADS),
        (
            "procedures/addarc_v2.sql",
            "-- a copy\nCREATE FUNCTION public.addarc(p text, c text, at timestamp with time zone) RETURNS void LANGUAGE sql AS '';",
        ),
    ]);
    assert_eq!(
        error,
        "public.addarc(text, text, timestamp with time zone) is defined twice, at \
         procedures/addarc.sql:10:1 and at procedures/addarc_v2.sql:2:1: keep one definition \
         (overloads need different argument types)"
    );
    // Type modifiers are not part of a signature in PostgreSQL.
    let error = load_error(&[(
        "procedures/f.sql",
        "CREATE FUNCTION f(numeric(10,2)) RETURNS int LANGUAGE sql AS 'SELECT 1';\nCREATE FUNCTION f(decimal) RETURNS int LANGUAGE sql AS 'SELECT 1';",
    )]);
    assert!(
        error.contains("at procedures/f.sql:1:1 and at procedures/f.sql:2:1"),
        "{error}"
    );
}

#[test]
fn a_missing_procedures_directory_is_explained() {
    let root = tempfile::tempdir().expect("temp dir");
    let error = Project::load(root.path())
        .expect_err("no procedures")
        .to_string();
    assert!(error.starts_with("no procedures directory at "), "{error}");
    let root = project_with(&[]);
    let error = Project::load(root.path())
        .expect_err("no files")
        .to_string();
    assert!(error.contains("holds no .sql files"), "{error}");
}

#[test]
fn files_load_in_file_name_order() {
    let project = load(&[
        (
            "procedures/b.sql",
            "CREATE FUNCTION b() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        (
            "procedures/a-b.sql",
            "CREATE FUNCTION ab() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        (
            "procedures/a.sql",
            "CREATE FUNCTION a() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        ),
        ("procedures/README.md", "not SQL"),
    ])
    .expect("loads");
    assert_eq!(
        identities(&project),
        ["public.ab()", "public.a()", "public.b()"]
    );
}

#[test]
fn the_example_project_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/project");
    let project = Project::load(&root).expect("the example project loads");
    assert_eq!(
        identities(&project),
        [
            "public.addarc(text, text, timestamp with time zone)",
            "public.addarc(text, text)",
            "public.reconcilemupstream(text)",
            "public.removearc(text, text)",
        ]
    );
    let kinds: Vec<RoutineKind> = project.routines().iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RoutineKind::Function,
            RoutineKind::Function,
            RoutineKind::Function,
            RoutineKind::Procedure
        ]
    );
    for routine in project.routines() {
        assert!(
            routine
                .grants
                .iter()
                .any(|grant| grant.grantee == Grantee::Role("perseus_app".to_owned())),
            "{} is granted to perseus_app",
            routine.identity
        );
        assert!(
            !routine.smoke_tests.is_empty(),
            "{} has a smoke test",
            routine.identity
        );
    }
    let addarc = &project.routines()[0];
    assert_eq!(
        project.declared_dependencies(addarc),
        ["reconcilemupstream"]
    );
}

/// The listing reads each directory entry's own type: a symlinked file is
/// a file (followed, as before), a directory or a dangling link named
/// `*.sql` is no procedure, and a symlinked sidecar still pairs with its
/// SQL file.
#[test]
fn symlinked_files_count_and_directories_named_like_files_do_not() {
    let root = project_with(&[]);
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let sql = elsewhere.path().join("linked.sql");
    std::fs::write(
        &sql,
        "CREATE OR REPLACE FUNCTION public.linked() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    )
    .expect("sql");
    let sidecar = elsewhere.path().join("linked.toml");
    std::fs::write(
        &sidecar,
        "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"app\"]\n",
    )
    .expect("sidecar");
    let procedures = root.path().join(PROCEDURES_DIR);
    std::os::unix::fs::symlink(&sql, procedures.join("linked.sql")).expect("link");
    std::os::unix::fs::symlink(&sidecar, procedures.join("linked.toml")).expect("link");
    std::fs::create_dir(procedures.join("folder.sql")).expect("dir");
    std::os::unix::fs::symlink(
        elsewhere.path().join("gone.sql"),
        procedures.join("gone.sql"),
    )
    .expect("dangling link");
    let project = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    assert_eq!(identities(&project), vec!["public.linked()"]);
    assert_eq!(project.routines()[0].grants.len(), 1, "the sidecar paired");
}

#[test]
fn files_saved_with_a_byte_order_mark_and_crlf_read_as_psql_reads_them() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(PROCEDURES_DIR)).expect("procedures dir");
    std::fs::write(
        root.path().join("pgrollout.toml"),
        "\u{feff}[schema]\r\nname = \"app\"\r\n",
    )
    .expect("write");
    std::fs::write(
        root.path().join("procedures/bom.sql"),
        "\u{feff}CREATE FUNCTION bom() RETURNS int\r\nLANGUAGE sql AS $$ SELECT 1 $$;\r\n",
    )
    .expect("write");
    std::fs::write(
        root.path().join("procedures/bom.toml"),
        "\u{feff}[[smoke_tests]]\r\nname = \"one\"\r\ncall = \"SELECT app.bom()\"\r\n",
    )
    .expect("write");
    let project = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    let routine = &project.routines()[0];
    assert_eq!(routine.identity.to_string(), "app.bom()");
    assert!(
        routine
            .create_sql
            .starts_with("CREATE OR REPLACE FUNCTION bom()"),
        "{:?}",
        routine.create_sql
    );
    assert_eq!(routine.smoke_tests.len(), 1);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_with_where_and_what_to_do() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(PROCEDURES_DIR)).expect("procedures dir");
    std::fs::write(
        root.path().join("procedures/caf.sql"),
        b"CREATE FUNCTION caf() RETURNS text\nLANGUAGE sql AS $$ SELECT 'caf\xe9' $$;\n",
    )
    .expect("write");
    let error = Project::load(root.path())
        .and_then(Project::strict)
        .expect_err("refused")
        .to_string();
    assert!(
        error.ends_with(
            "procedures/caf.sql:2:31: the file is not UTF-8 (byte 0xE9): pgrollout reads files \
             as UTF-8, as psql does with client_encoding UTF8; convert it, e.g. `iconv -f LATIN1 \
             -t UTF-8`"
        ),
        "{error}"
    );
}
