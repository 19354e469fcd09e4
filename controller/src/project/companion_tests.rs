//! Companion statements in a procedure file (issue 15): GRANT/REVOKE,
//! COMMENT ON and ALTER … OWNER TO of the file's own routines are carried
//! with them; anything else is refused with advice.

use super::*;

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(PROCEDURES_DIR)).expect("procedures dir");
    for (path, text) in files {
        std::fs::write(root.path().join(path), text).expect("write");
    }
    root
}

fn load(files: &[(&str, &str)]) -> Result<Project, ProjectError> {
    let root = project(files);
    Project::load(root.path()).and_then(Project::strict)
}

fn load_error(text: &str) -> String {
    load(&[("procedures/tbl_count.sql", text)])
        .expect_err("the file must be refused")
        .to_string()
}

/// The example of the README: a SECURITY DEFINER function with its
/// privileges, comment and owner next to it.
const TBL_COUNT: &str = "\
CREATE OR REPLACE FUNCTION app.tbl_count(t regclass) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS $$
BEGIN RETURN 0; END $$;
REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC;          -- PostgreSQL's own advice
GRANT EXECUTE ON FUNCTION app.tbl_count(regclass) TO reporting;
COMMENT ON FUNCTION app.tbl_count(regclass) IS 'rows of a table';
ALTER FUNCTION app.tbl_count(regclass) OWNER TO app_owner;
";

const TWO_ROUTINES: &str = "\
CREATE FUNCTION f(a integer) RETURNS int LANGUAGE sql AS 'SELECT a';
CREATE PROCEDURE p(a text) LANGUAGE sql AS 'SELECT 1';
";

#[test]
fn privileges_comment_and_owner_travel_with_their_routine_in_file_order() {
    let loaded = load(&[("procedures/tbl_count.sql", TBL_COUNT)]).expect("loads");
    let routine = &loaded.routines()[0];
    assert_eq!(routine.identity.to_string(), "app.tbl_count(regclass)");
    assert_eq!(
        routine.companion_sql,
        [
            "REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC",
            "GRANT EXECUTE ON FUNCTION app.tbl_count(regclass) TO reporting",
            "COMMENT ON FUNCTION app.tbl_count(regclass) IS 'rows of a table'",
            "ALTER FUNCTION app.tbl_count(regclass) OWNER TO app_owner",
        ]
    );
    // The CREATE is still exactly the CREATE.
    assert!(routine.create_sql.ends_with("BEGIN RETURN 0; END $$"));
}

#[test]
fn names_resolve_as_everywhere_else_and_each_goes_to_the_routines_it_names() {
    let text = format!(
        "{TWO_ROUTINES}\
         -- unqualified: the file's schema; aliases and ROUTINE accepted\n\
         GRANT EXECUTE ON FUNCTION f(int4) TO app_rw;\n\
         REVOKE EXECUTE ON ROUTINE public.f(integer), p FROM public;\n\
         COMMENT ON PROCEDURE p IS 'bare name: the only p of the file';\n\
         ALTER ROUTINE p(text) OWNER TO app_owner;\n\
         GRANT ALL ON PROCEDURE public.p(text) TO app_rw WITH GRANT OPTION;\n"
    );
    let loaded = load(&[("procedures/f.sql", &text)]).expect("loads");
    let by_identity = |identity: &str| {
        loaded
            .routines()
            .iter()
            .find(|r| r.identity.to_string() == identity)
            .expect("defined")
            .companion_sql
            .clone()
    };
    assert_eq!(
        by_identity("public.f(integer)"),
        [
            "GRANT EXECUTE ON FUNCTION f(int4) TO app_rw",
            "REVOKE EXECUTE ON ROUTINE public.f(integer), p FROM public",
        ]
    );
    assert_eq!(
        by_identity("public.p(text)"),
        [
            "REVOKE EXECUTE ON ROUTINE public.f(integer), p FROM public",
            "COMMENT ON PROCEDURE p IS 'bare name: the only p of the file'",
            "ALTER ROUTINE p(text) OWNER TO app_owner",
            "GRANT ALL ON PROCEDURE public.p(text) TO app_rw WITH GRANT OPTION",
        ]
    );
}

#[test]
fn a_file_without_companions_carries_none() {
    let loaded = load(&[("procedures/f.sql", TWO_ROUTINES)]).expect("loads");
    assert!(loaded.routines().iter().all(|r| r.companion_sql.is_empty()));
}

#[test]
fn a_companion_naming_a_routine_the_file_does_not_create_is_refused_with_its_place() {
    let error = load_error(&format!(
        "{TWO_ROUTINES}GRANT EXECUTE ON FUNCTION other(integer) TO app_rw;\n"
    ));
    assert!(
        error.starts_with(
            "procedures/tbl_count.sql:3:1: `GRANT EXECUTE ON FUNCTION other(integer) TO app_rw` \
             acts on public.other(integer), which this file does not create"
        ),
        "{error}"
    );
    // Another overload of a routine of the file is another routine.
    let error = load_error(&format!(
        "{TWO_ROUTINES}COMMENT ON FUNCTION f(text) IS 'x';\n"
    ));
    assert!(
        error.contains("acts on public.f(text), which this file does not create"),
        "{error}"
    );
    // A schema other than the routine's.
    let error = load_error(&format!(
        "{TWO_ROUTINES}\n\nALTER FUNCTION app.f(integer) OWNER TO x;\n"
    ));
    assert!(
        error.starts_with("procedures/tbl_count.sql:5:1: "),
        "{error}"
    );
    assert!(error.contains("app.f(integer)"), "{error}");
}

#[test]
fn a_bare_name_must_designate_one_routine_of_the_right_kind() {
    let overloads = "\
CREATE FUNCTION f(a integer) RETURNS int LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION f(a text) RETURNS int LANGUAGE sql AS 'SELECT 1';
COMMENT ON FUNCTION f IS 'which one?';
";
    let error = load_error(overloads);
    assert!(
        error.contains("names public.f, which matches 2 routines of this file"),
        "{error}"
    );
    assert!(error.contains("write the argument types"), "{error}");
    let error = load_error(&format!(
        "{TWO_ROUTINES}GRANT EXECUTE ON PROCEDURE f(integer) TO app_rw;\n"
    ));
    assert!(
        error.contains(
            "names public.f(integer) as a procedure, but this file creates it as a function"
        ),
        "{error}"
    );
}

#[test]
fn schema_wide_and_non_routine_privileges_are_refused() {
    let error = load_error(&format!(
        "{TWO_ROUTINES}GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO app_rw;\n"
    ));
    assert!(
        error.starts_with("procedures/tbl_count.sql:3:1: GRANT … IN SCHEMA acts on routines this file does not define"),
        "{error}"
    );
    let error = load_error(&format!(
        "{TWO_ROUTINES}GRANT SELECT ON TABLE t TO app_rw;\n"
    ));
    assert!(
        error.contains("GRANT statement is not allowed in a procedure file"),
        "{error}"
    );
    let error = load_error(&format!(
        "{TWO_ROUTINES}COMMENT ON TABLE t IS 'not a routine';\n"
    ));
    assert!(
        error.contains("COMMENT ON TABLE statement is not allowed in a procedure file"),
        "{error}"
    );
    let error = load_error(&format!(
        "{TWO_ROUTINES}ALTER FUNCTION f(integer) RENAME TO g;\n"
    ));
    assert!(
        error.contains("ALTER FUNCTION statement is not allowed in a procedure file"),
        "{error}"
    );
}

/// pgq's `get_queue_info.sql` as published: DROP … IF EXISTS of each
/// overload, then its CREATE with another return type.
const DROP_THEN_CREATE: &str = "\
drop function if exists pgq.get_queue_info();
drop function if exists pgq.get_queue_info(text);

create or replace function pgq.get_queue_info(out queue_name text) returns setof record
language sql as $$ select 'q'::text $$;
create or replace function pgq.get_queue_info(in i_queue_name text, out queue_name text)
returns setof record language sql as $$ select i_queue_name $$;
";

#[test]
fn a_drop_before_the_create_of_the_same_routine_is_accepted_and_not_run() {
    let loaded = load(&[("procedures/get_queue_info.sql", DROP_THEN_CREATE)]).expect("loads");
    let routines = loaded.routines();
    assert_eq!(routines.len(), 2);
    for routine in routines {
        assert!(routine.companion_sql.is_empty(), "never run: {routine:?}");
    }
    let warnings: Vec<String> = loaded.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    // Each at its routine's CREATE, where a deploy of that routine shows it.
    assert!(
        warnings[0].starts_with(
            "procedures/get_queue_info.sql:4:1: `drop function if exists pgq.get_queue_info()` \
             (line 1) is not run: pgrollout replaces pgq.get_queue_info() in place"
        ),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("procedures/get_queue_info.sql:6:1: "),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("privileges granted before stay"),
        "{warnings:?}"
    );
    assert_eq!(loaded.warnings_for(&routines[1..]).len(), 1);
}

#[test]
fn a_drop_that_would_remove_a_routine_is_refused_with_what_to_do_instead() {
    // After the CREATE: psql would leave the routine dropped.
    let error = load_error(&format!("{TWO_ROUTINES}DROP FUNCTION f(integer);\n"));
    assert!(
        error.starts_with(
            "procedures/tbl_count.sql:3:1: `DROP FUNCTION f(integer)` drops public.f(integer), \
             which this file creates before it"
        ),
        "{error}"
    );
    // A routine the file does not create: a retire.
    let error = load_error(&format!("DROP FUNCTION IF EXISTS f(text);\n{TWO_ROUTINES}"));
    assert!(
        error.starts_with(
            "procedures/tbl_count.sql:1:1: `DROP FUNCTION IF EXISTS f(text)` drops \
             public.f(text), which this file does not create"
        ),
        "{error}"
    );
    assert!(error.contains("pgrollout retire"), "{error}");
    // One name of several that is not the file's refuses the statement.
    let error = load_error(&format!(
        "DROP ROUTINE f(integer), other();\n{TWO_ROUTINES}"
    ));
    assert!(error.contains("drops public.other()"), "{error}");
    // CASCADE would take dependants with it.
    let error = load_error(&format!(
        "DROP FUNCTION IF EXISTS f(integer) CASCADE;\n{TWO_ROUTINES}"
    ));
    assert!(
        error.starts_with(
            "procedures/tbl_count.sql:1:1: DROP FUNCTION IF EXISTS statement is not allowed in a \
             procedure file: CASCADE would drop what depends on the routine"
        ),
        "{error}"
    );
    // The kind written must be the routine's.
    let error = load_error(&format!("DROP PROCEDURE f(integer);\n{TWO_ROUTINES}"));
    assert!(
        error.contains("as a procedure, but this file creates it as a function"),
        "{error}"
    );
}

#[test]
fn alter_options_are_companions_and_rename_or_move_are_refused() {
    let text = format!(
        "{TWO_ROUTINES}ALTER FUNCTION f(int4) SET search_path = pg_catalog, pg_temp;\n\
         ALTER ROUTINE public.p SECURITY DEFINER;\nALTER FUNCTION f(integer) COST 5 STRICT;\n"
    );
    let loaded = load(&[("procedures/two.sql", &text)]).expect("loads");
    let routines = loaded.routines();
    assert_eq!(
        routines[0].companion_sql,
        [
            "ALTER FUNCTION f(int4) SET search_path = pg_catalog, pg_temp",
            "ALTER FUNCTION f(integer) COST 5 STRICT"
        ]
    );
    assert_eq!(
        routines[1].companion_sql,
        ["ALTER ROUTINE public.p SECURITY DEFINER"]
    );
    let error = load_error(&format!(
        "{TWO_ROUTINES}ALTER FUNCTION other() SECURITY DEFINER;\n"
    ));
    assert!(
        error.contains("acts on public.other(), which this file does not create"),
        "{error}"
    );
    let error = load_error(&format!(
        "{TWO_ROUTINES}ALTER FUNCTION f(integer) RENAME TO g;\n"
    ));
    assert!(error.contains("another name is another routine"), "{error}");
    let error = load_error(&format!(
        "{TWO_ROUTINES}ALTER FUNCTION f(integer) SET SCHEMA app;\n"
    ));
    assert!(
        error.contains("another schema is another routine"),
        "{error}"
    );
    let error = load_error(&format!(
        "{TWO_ROUTINES}ALTER FUNCTION f(integer) DEPENDS ON EXTENSION plpgsql;\n"
    ));
    assert!(error.contains("move it to a schema migration"), "{error}");
    assert_eq!(
        companion::read_wire("ALTER FUNCTION f(integer) SET search_path = public").map(drop),
        Ok(())
    );
    assert!(companion::read_wire("ALTER FUNCTION f(integer) RENAME TO g").is_err());
}

#[test]
fn a_file_may_be_wrapped_in_begin_and_commit_and_nothing_else() {
    for (begin, commit) in [
        ("BEGIN", "COMMIT"),
        ("start transaction", "end"),
        ("SET client_min_messages = warning;\nBEGIN", "COMMIT"),
    ] {
        let text = format!("{begin};\n{TWO_ROUTINES}{commit};\n");
        let loaded = load(&[("procedures/two.sql", &text)]).expect("loads");
        assert_eq!(loaded.routines().len(), 2);
        assert!(loaded.routines().iter().all(|r| r.companion_sql.is_empty()));
    }
    for (text, at) in [
        (format!("BEGIN;\n{TWO_ROUTINES}"), "1:1"),
        (format!("{TWO_ROUTINES}COMMIT;\n"), "3:1"),
        (format!("BEGIN;\n{TWO_ROUTINES}ROLLBACK;\n"), "1:1"),
        (format!("BEGIN READ ONLY;\n{TWO_ROUTINES}COMMIT;\n"), "1:1"),
        (format!("BEGIN;\n{TWO_ROUTINES}COMMIT AND CHAIN;\n"), "1:1"),
        (
            "BEGIN;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\nCOMMIT;\n\
             CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1';\nCOMMIT;\n"
                .to_owned(),
            "3:1",
        ),
        (
            format!("BEGIN;\n{TWO_ROUTINES}SAVEPOINT s;\nCOMMIT;\n"),
            "4:1",
        ),
    ] {
        let error = load_error(&text);
        assert!(
            error.starts_with(&format!("procedures/tbl_count.sql:{at}: ")),
            "{text}: {error}"
        );
        assert!(
            error.contains("a deploy is one transaction already"),
            "{text}: {error}"
        );
    }
}

#[test]
fn a_set_search_path_at_the_top_declares_the_files_schema_and_path() {
    let text = format!("SET client_min_messages = warning;\nSET search_path = app, \"$user\", types;\n{TWO_ROUTINES}");
    let loaded = load(&[("procedures/two.sql", &text)]).expect("loads");
    let routines = loaded.routines();
    assert_eq!(routines[0].identity.to_string(), "app.f(integer)");
    assert_eq!(routines[1].identity.to_string(), "app.p(text)");
    for routine in routines {
        assert_eq!(routine.search_path, ["app", "types"]);
        assert!(routine.companion_sql.is_empty());
    }
    // Over the project's declaration; a sidecar's must agree.
    let loaded = load(&[
        ("pgrollout.toml", "[schema]\nname = \"lib\"\n"),
        ("procedures/two.sql", &text),
    ])
    .expect("loads");
    assert_eq!(loaded.routines()[0].identity.to_string(), "app.f(integer)");
    let error = load(&[
        ("procedures/two.sql", &text),
        ("procedures/two.toml", "[schema]\nname = \"lib\"\n"),
    ])
    .expect_err("two declarations that differ")
    .to_string();
    assert!(
        error.starts_with("procedures/two.sql:2:1: SET search_path declares [\"app\", \"types\"], but the file's sidecar declares [schema] \"lib\""),
        "{error}"
    );
}

#[test]
fn set_is_refused_with_what_to_do_instead() {
    // A search path is declared at the file's top, not between its CREATEs.
    let error = load_error(&format!("{TWO_ROUTINES}SET search_path = app, public;\n"));
    assert!(
        error.starts_with(
            "procedures/tbl_count.sql:3:1: SET search_path: only at the file's top, before its \
             first CREATE"
        ),
        "{error}"
    );
    let error = load_error(&format!("SET LOCAL search_path = app;\n{TWO_ROUTINES}"));
    assert!(
        error.contains("declare it in pgrollout.toml [schema] search_path"),
        "{error}"
    );
    for (set, reason) in [
        (
            "SET search_path = pg_catalog, app",
            "would create this file's routines in \"pg_catalog\"",
        ),
        (
            "SET search_path = \"$user\"",
            "names no schema to create in",
        ),
        ("SET search_path TO DEFAULT", "names no schema to create in"),
    ] {
        let error = load_error(&format!("{set};\n{TWO_ROUTINES}"));
        assert!(
            error.starts_with("procedures/tbl_count.sql:1:1: SET search_path: "),
            "{set}: {error}"
        );
        assert!(error.contains(reason), "{set}: {error}");
    }
    for (set, advice) in [
        (
            "SET standard_conforming_strings = off",
            "backslashes are literal",
        ),
        (
            "SET client_encoding = 'LATIN1'",
            "reads every file as UTF-8",
        ),
        (
            "SET LOCAL client_min_messages = warning",
            "move it to a schema migration",
        ),
        ("SET work_mem = '1GB'", "move it to a schema migration"),
    ] {
        let error = load_error(&format!("{set};\n{TWO_ROUTINES}"));
        assert!(
            error.starts_with("procedures/tbl_count.sql:1:1: SET statement is not allowed"),
            "{set}: {error}"
        );
        assert!(error.contains(advice), "{set}: {error}");
    }
    // Anything else keeps the general advice.
    let error = load_error(&format!("{TWO_ROUTINES}INSERT INTO t VALUES (1);\n"));
    assert!(error.contains("move it to a schema migration"), "{error}");
}

#[test]
fn a_scripts_session_settings_are_not_run_and_said_once() {
    let text = format!(
        "SET client_min_messages = warning;\nSET client_encoding = 'UTF8';\n\
         SET standard_conforming_strings = on;\nSET check_function_bodies = false;\n\
         SET statement_timeout = '5min';\nSET lock_timeout = 0;\nSET transaction_timeout = 0;\n\
         SELECT pg_catalog.set_config('search_path', '', false);\nSET xmloption = content;\n\
         SET row_security = off;\n{TWO_ROUTINES}"
    );
    let loaded = load(&[("procedures/two.sql", &text)]).expect("loads");
    assert!(loaded.routines().iter().all(|r| r.companion_sql.is_empty()));
    let warnings: Vec<String> = loaded.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "procedures/two.sql:11:1: `SET check_function_bodies = false` (line 4) is not run: \
             pgrollout validates every body whatever it says (each CREATE in dependency order, in \
             one transaction that commits only when all are valid)",
            "procedures/two.sql:11:1: `SET statement_timeout = '5min'` (line 5) is not run: a \
             deploy runs with the agent's own session settings",
            "procedures/two.sql:11:1: `SELECT pg_catalog.set_config('search_path', '', false)` \
             (line 8) is not run: pg_dump's empty search_path is not used: the file's routines \
             are created and their bodies validated with the file's declared path ([schema] in \
             pgrollout.toml or the sidecar, else public)",
        ]
    );
    assert!(companion::read_wire("SET check_function_bodies = false").is_err());
    for (refused, advice) in [
        (
            "SELECT pg_catalog.set_config('search_path', 'app', false);",
            "write `SET search_path = schema, …` at the file's top",
        ),
        (
            "SET xmloption = document;",
            "the server's default (content)",
        ),
        (
            "SELECT set_config('work_mem', '1GB', false);",
            "move it to a schema migration",
        ),
    ] {
        let error = load_error(&format!("{refused}\n{TWO_ROUTINES}"));
        assert!(error.contains(advice), "{refused}: {error}");
    }
}

#[test]
fn the_parse_cache_keeps_companions_as_spans_and_gives_them_back() {
    let root = project(&[("procedures/tbl_count.sql", TBL_COUNT)]);
    let cache = tempfile::tempdir().expect("cache dir");
    let first = Project::load_cached(root.path(), cache.path()).expect("loads");
    assert_eq!(first.files_from_cache(), 0);
    let second = Project::load_cached(root.path(), cache.path()).expect("loads");
    assert_eq!(
        second.files_from_cache(),
        1,
        "the second load uses the cache"
    );
    assert_eq!(
        second.routines()[0].companion_sql,
        first.routines()[0].companion_sql
    );
    assert_eq!(second.routines()[0].companion_sql.len(), 4);
    let cached = std::fs::read_dir(cache.path().join("parse"))
        .expect("cache dir")
        .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("read"))
        .collect::<String>();
    assert!(!cached.contains("REVOKE"), "spans only, no SQL: {cached}");
    assert!(cached.contains("pgrollout-parse-cache-v2"), "{cached}");
}

#[test]
fn the_controller_edge_refuses_anything_but_a_companion_statement() {
    let ok = "REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC";
    assert_eq!(companion::read_wire(ok).map(drop), Ok(()));
    for hostile in [
        "ALTER ROLE app_rw SUPERUSER",
        "GRANT pg_read_server_files TO app_rw",
        "REVOKE ALL ON FUNCTION f() FROM PUBLIC; DROP TABLE t",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO app_rw",
        "COMMIT",
        // A file's DROP is never part of a plan: one in a plan was put there.
        "DROP FUNCTION IF EXISTS app.tbl_count(regclass)",
        "DROP ROUTINE app.tbl_count(regclass) CASCADE",
    ] {
        assert!(companion::read_wire(hostile).is_err(), "{hostile}");
    }
}

/// What the CLI would send for `files`: every routine of the project.
fn plan_of(files: &[(&str, &str)]) -> Vec<pgrollout_shared::routine::Routine> {
    load(files).expect("loads").routines().to_vec()
}

#[test]
fn the_edge_accepts_what_the_cli_sends_whatever_types_and_schemas_it_names() {
    let text = "\
SET search_path = app, public;
CREATE FUNCTION f(a numeric(10,2), b int, c varchar(20)[], d double precision) RETURNS int
  LANGUAGE sql AS 'SELECT 1';
CREATE PROCEDURE \"Odd Name\"(timestamp with time zone) LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION other.g(VARIADIC text[]) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION h(p items.id%TYPE) RETURNS int LANGUAGE sql AS 'SELECT 1';
GRANT EXECUTE ON FUNCTION f(numeric, integer, character varying[], float8), other.g(text[]) TO r;
REVOKE ALL ON ROUTINE \"Odd Name\" FROM PUBLIC;
ALTER PROCEDURE app.\"Odd Name\"(timestamptz) OWNER TO o;
COMMENT ON FUNCTION h(items.id%TYPE) IS 'x';
ALTER FUNCTION other.g SECURITY DEFINER;
";
    let plan = plan_of(&[("procedures/all.sql", text)]);
    assert_eq!(plan.len(), 4);
    assert!(plan.iter().all(|r| !r.companion_sql.is_empty()));
    assert_eq!(hostile_sql::check_routines(&plan), Ok(()));
    // One routine alone, with what it carries (the CLI takes the GRANT's
    // other routine along: see the selection test).
    let h: Vec<_> = plan
        .iter()
        .filter(|r| r.identity.name == "h")
        .cloned()
        .collect();
    assert_eq!(hostile_sql::check_routines(&h), Ok(()));
}

#[test]
fn the_edge_refuses_a_companion_statement_acting_outside_its_plan() {
    let text = "\
CREATE FUNCTION f(a integer) RETURNS int LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION g(a text) RETURNS text LANGUAGE sql AS 'SELECT a';
GRANT EXECUTE ON FUNCTION f(integer), g(text) TO r;
";
    let plan = plan_of(&[("procedures/two.sql", text)]);
    assert_eq!(hostile_sql::check_routines(&plan), Ok(()));
    let refused = |plan: &[pgrollout_shared::routine::Routine]| {
        hostile_sql::check_routines(plan).expect_err("refused")
    };
    // The GRANT names g, which this plan does not deploy.
    let error = refused(&plan[..1]);
    assert!(
        error.contains("acts on public.g(text), which is not a routine this plan deploys"),
        "{error}"
    );
    // A hand-made plan attaching a statement about a routine outside it.
    for hostile in [
        "ALTER FUNCTION victim() SECURITY DEFINER",
        "ALTER FUNCTION public.victim() OWNER TO mallory",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) TO mallory",
        "COMMENT ON FUNCTION f(bigint) IS 'not f(integer)'",
        "ALTER FUNCTION other.f(integer) SET work_mem = '1GB'",
    ] {
        let mut forged = plan.clone();
        forged[0].companion_sql = vec![hostile.to_owned()];
        let error = refused(&forged);
        assert!(
            error.starts_with("public.f(integer) (procedures/two.sql): companion statement"),
            "{hostile}: {error}"
        );
        assert!(
            error.contains("which is not a routine this plan deploys"),
            "{error}"
        );
    }
    // A routine of the plan, but from another file.
    let mut forged = plan.clone();
    forged[1].source_path = "procedures/elsewhere.sql".to_owned();
    assert!(refused(&forged).contains("not a routine this plan deploys from procedures/two.sql"));
    // A statement about g travelling with f only.
    let mut forged = plan.clone();
    forged[0].companion_sql = vec!["REVOKE ALL ON FUNCTION g(text) FROM PUBLIC".to_owned()];
    assert!(refused(&forged).contains("travels with public.f(integer) but does not name it"));
    // The kind as written must be the plan's.
    let mut forged = plan.clone();
    forged[0].companion_sql = vec!["ALTER PROCEDURE f(integer) OWNER TO o".to_owned()];
    assert!(refused(&forged).contains("names public.f(integer) as a procedure"));
    // An unqualified name is in the routine's first schema, not elsewhere.
    let mut forged = plan;
    forged[0].search_path = vec!["other".to_owned(), "public".to_owned()];
    forged[0].companion_sql = vec!["COMMENT ON FUNCTION f(integer) IS 'x'".to_owned()];
    assert!(refused(&forged).contains("acts on other.f(integer)"));
}

#[test]
fn selecting_a_routine_takes_the_routines_its_companion_statements_also_act_on() {
    let two = "\
CREATE FUNCTION f(a integer) RETURNS int LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION g(a text) RETURNS text LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION lone() RETURNS int LANGUAGE sql AS 'SELECT 1';
GRANT EXECUTE ON FUNCTION f(integer), g(text) TO r;
COMMENT ON FUNCTION lone() IS 'alone';
";
    let other = "CREATE FUNCTION z() RETURNS int LANGUAGE sql AS 'SELECT 1';\n\
                 GRANT EXECUTE ON FUNCTION z() TO r;\n";
    let project = load(&[("procedures/two.sql", two), ("procedures/z.sql", other)]).expect("loads");
    let names = |selected: Vec<pgrollout_shared::routine::Routine>| -> Vec<String> {
        selected.iter().map(|r| r.identity.to_string()).collect()
    };
    for (name, expected) in [
        ("f", vec!["public.f(integer)", "public.g(text)"]),
        ("g", vec!["public.g(text)", "public.f(integer)"]),
        ("lone", vec!["public.lone()"]),
        ("z", vec!["public.z()"]),
    ] {
        assert_eq!(
            names(project.select(name).expect("selects")),
            expected,
            "{name}"
        );
    }
    let batch = load(&[("procedures/two.sql", two), ("procedures/z.sql", other)])
        .expect("loads")
        .into_selection(&["g".to_owned(), "z".to_owned(), "f".to_owned()]);
    assert_eq!(
        names(batch.routines),
        vec!["public.g(text)", "public.f(integer)", "public.z()"]
    );
}
