//! Issue 15: a broken file blocks only its own names, a deploy of one
//! routine parses only what it needs, plain CREATE is applied as CREATE OR
//! REPLACE, and what the offline parse cannot judge is only a warning.

use super::*;

fn project_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(PROCEDURES_DIR)).expect("procedures dir");
    for (path, contents) in files {
        std::fs::write(root.path().join(path), contents).expect("write project file");
    }
    root
}

const GOOD: &str =
    "CREATE OR REPLACE FUNCTION public.good() RETURNS integer LANGUAGE sql AS 'SELECT 1';";
const BROKEN: &str = "CREATE FUNCTION public.bad() RETURNS integer LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1\nEND $$;";

#[test]
fn a_broken_file_blocks_only_the_names_it_defines() {
    let root = project_with(&[
        ("procedures/good.sql", GOOD),
        ("procedures/bad.sql", BROKEN),
        (
            "procedures/other.sql",
            "CREATE FUNCTION public.also_bad( RETURNS",
        ),
    ]);
    let project = Project::load(root.path()).expect("loads");
    assert_eq!(project.select("good").expect("selects").len(), 1);
    let error = project.select("bad").expect_err("blocked").to_string();
    assert!(
        error.contains(
            "procedures/bad.sql:4:4: syntax error at end of input (in the PL/pgSQL body)"
        ),
        "{error}"
    );
    // It does not parse, so its scanner tokens say what it defines.
    assert!(project.select("also_bad").is_err());
    assert_eq!(project.problems().count(), 2);
}

#[test]
fn a_deploy_of_one_name_parses_only_the_files_that_may_define_it() {
    let root = project_with(&[
        ("procedures/good.sql", GOOD),
        ("procedures/bad.sql", BROKEN),
        (
            "procedures/caller.sql",
            "CREATE FUNCTION public.caller() RETURNS integer LANGUAGE sql AS 'SELECT 2';",
        ),
        ("procedures/caller.toml", "depends_on = [\"good\"]\n"),
    ]);
    let project = Project::load_for(root.path(), &["caller".to_owned()]).expect("loads");
    assert_eq!(project.select("caller").expect("selects").len(), 1);
    assert_eq!(
        project.files_loaded(),
        2,
        "caller.sql and good.sql (its declared dependency), not bad.sql"
    );
    assert_eq!(project.problems().count(), 0);
    // A name none of those files defines is looked up in the whole project.
    let error = project.select("goood").expect_err("unknown").to_string();
    assert!(error.contains("did you mean good?"), "{error}");
}

#[test]
fn a_plain_create_is_applied_as_create_or_replace_and_otherwise_unchanged() {
    let text =
        "-- note\ncreate  FUNCTION public.p(n int) RETURNS int LANGUAGE sql AS $$ SELECT n $$;\n\
                CREATE OR REPLACE PROCEDURE public.p() LANGUAGE sql AS $$ SELECT 1 $$;";
    let root = project_with(&[("procedures/p.sql", text)]);
    let project = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    let sql: Vec<&str> = project
        .routines()
        .iter()
        .map(|r| r.create_sql.as_str())
        .collect();
    assert_eq!(
        sql,
        [
            "create OR REPLACE  FUNCTION public.p(n int) RETURNS int LANGUAGE sql AS $$ SELECT n $$",
            "CREATE OR REPLACE PROCEDURE public.p() LANGUAGE sql AS $$ SELECT 1 $$",
        ]
    );
}

#[test]
fn a_sql_body_error_names_its_file_line_and_column() {
    for (quoting, text) in [
        ("dollar", "CREATE FUNCTION public.s() RETURNS int\nLANGUAGE sql AS $$\n  SELECT 1,\n  FROM t $$;"),
        ("single", "CREATE FUNCTION public.s() RETURNS int\nLANGUAGE sql AS '\n  SELECT ''a'',\n  FROM t';"),
    ] {
        let root = project_with(&[("procedures/s.sql", text)]);
        let error = Project::load(root.path())
            .and_then(Project::strict)
            .expect_err("refused")
            .to_string();
        assert_eq!(
            error,
            "procedures/s.sql:4:3: syntax error at or near \"FROM\" (in the SQL body)",
            "{quoting}"
        );
    }
}

/// A scanner's error inside the body (an unterminated string) is the
/// body's error too, located, and a body the parser accepts is no error:
/// the check runs PostgreSQL's raw parser without its tree.
#[test]
fn a_sql_bodys_scanner_error_is_located_and_a_sound_body_passes() {
    let text = "CREATE FUNCTION public.s() RETURNS text\nLANGUAGE sql AS $$\n  SELECT 'open $$;";
    let root = project_with(&[("procedures/s.sql", text)]);
    let error = Project::load(root.path())
        .and_then(Project::strict)
        .expect_err("refused")
        .to_string();
    assert!(
        error.starts_with("procedures/s.sql:3:10: unterminated quoted string")
            && error.ends_with("(in the SQL body)"),
        "{error}"
    );
    let sound = "CREATE FUNCTION public.s() RETURNS text\nLANGUAGE sql AS $$\n  SELECT 'closed'; SELECT 'two' $$;";
    let root = project_with(&[("procedures/s.sql", sound)]);
    Project::load(root.path())
        .and_then(Project::strict)
        .expect("a body of two statements parses");
}

#[test]
fn a_type_of_another_schema_in_plpgsql_is_a_warning() {
    let text = "CREATE FUNCTION s.f(p s.t) RETURNS s.t LANGUAGE plpgsql AS $$\n\
                DECLARE v s.t; BEGIN v := p; RETURN v; END $$;";
    let root = project_with(&[("procedures/f.sql", text)]);
    let project = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    let routines = project.select("s.f").expect("selects");
    let warnings = project.warnings_for(&routines);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .to_string()
            .starts_with("procedures/f.sql:1:1: the offline PL/pgSQL parse cannot judge this body"),
        "{}",
        warnings[0]
    );
    // Ordering reads what it can and notes the rest.
    let order = crate::plan::deploy_order(routines).expect("orders");
    assert_eq!(order.not_analysed.len(), 1);
}

#[test]
fn a_column_type_declared_in_plpgsql_is_a_warning_that_says_what_it_cannot_look_up() {
    let text = "CREATE FUNCTION f(p items.id%TYPE) RETURNS text LANGUAGE plpgsql AS $$\n\
                DECLARE v items.name%TYPE; BEGIN RETURN v; END $$;";
    let root = project_with(&[("procedures/f.sql", text)]);
    let project = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    let routines = project.select("f").expect("selects");
    assert_eq!(routines[0].identity.to_string(), "public.f(items.id%TYPE)");
    let warnings = project.warnings_for(&routines);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .to_string()
            .contains("(it has no catalog to look up a type such as `items.id%TYPE`"),
        "{}",
        warnings[0]
    );
}
