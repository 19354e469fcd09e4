//! Loader tests for the declared schema and search path (`pgrollout.toml`,
//! a sidecar's `[schema]`).

use super::*;
use crate::plan::build_plan;

fn load_project(files: &[(&str, &str)]) -> Result<Project, ProjectError> {
    let root = tempfile::tempdir().expect("temp dir");
    for (path, contents) in files {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, contents).expect("write");
    }
    Project::load(root.path())
}

const UNQUALIFIED: &str = "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';";
const QUALIFIED: &str = "CREATE FUNCTION other.g() RETURNS int LANGUAGE sql AS 'SELECT 2';";

fn placed(project: &Project) -> Vec<(String, Vec<String>)> {
    project
        .routines()
        .iter()
        .map(|r| (r.identity.to_string(), r.search_path.clone()))
        .collect()
}

#[test]
fn without_a_project_file_code_lives_in_public_and_says_so() {
    let project = load_project(&[("procedures/f.sql", UNQUALIFIED)]).expect("loads");
    assert_eq!(
        placed(&project),
        [("public.f()".to_owned(), vec!["public".to_owned()])]
    );
}

#[test]
fn unqualified_names_land_in_the_declared_schema_and_a_sidecar_can_move_its_file() {
    let h = UNQUALIFIED.replace(" f(", " h(");
    let project = load_project(&[
        (
            "pgrollout.toml",
            "[schema]\nname = \"tap\"\nsearch_path = [\"tap\", \"types\"]\n",
        ),
        ("procedures/f.sql", UNQUALIFIED),
        ("procedures/g.sql", QUALIFIED),
        ("procedures/h.sql", h.as_str()),
        (
            "procedures/h.toml",
            "[schema]\nname = \"util\"\n[[smoke_tests]]\nname = \"t\"\ncall = \"SELECT h()\"\n",
        ),
    ])
    .expect("loads");
    let tap_path = vec!["tap".to_owned(), "types".to_owned()];
    assert_eq!(
        placed(&project),
        [
            ("tap.f()".to_owned(), tap_path.clone()),
            // Qualified names keep their schema; the body still sees the path.
            ("other.g()".to_owned(), tap_path),
            ("util.h()".to_owned(), vec!["util".to_owned()]),
        ]
    );
    assert_eq!(project.routines()[2].smoke_tests[0].search_path, ["util"]);
    assert_eq!(project.select("tap.f").expect("by schema").len(), 1);
}

#[test]
fn the_search_path_is_part_of_the_plan_id() {
    let in_public = load_project(&[("procedures/f.sql", UNQUALIFIED)]).expect("loads");
    let in_public_too = load_project(&[
        ("pgrollout.toml", "[schema]\nname = \"public\"\n"),
        ("procedures/f.sql", UNQUALIFIED),
    ])
    .expect("loads");
    let wider = load_project(&[
        (
            "pgrollout.toml",
            "[schema]\nsearch_path = [\"public\", \"ext\"]\n",
        ),
        ("procedures/f.sql", UNQUALIFIED),
    ])
    .expect("loads");
    let plan = |project: &Project| build_plan(project.routines().to_vec(), "l", "c").plan_id;
    assert_eq!(plan(&in_public), plan(&in_public_too));
    assert_ne!(plan(&in_public), plan(&wider));
}

#[test]
fn a_bad_project_file_is_refused_with_its_place() {
    let error = load_project(&[
        ("pgrollout.toml", "[schema]\nnme = \"tap\"\n"),
        ("procedures/f.sql", UNQUALIFIED),
    ])
    .expect_err("refused")
    .to_string();
    assert!(
        error.starts_with("pgrollout.toml:2:") && error.contains("unknown field `nme`"),
        "{error}"
    );
    // A bad sidecar `[schema]` blocks only its own file (issue 15: one
    // unreadable file never blocks the project).
    let project = load_project(&[
        ("procedures/f.sql", UNQUALIFIED),
        (
            "procedures/f.toml",
            "[schema]\nname = \"a\"\nsearch_path = [\"b\"]\n",
        ),
    ])
    .expect("a broken file is a problem of its own, not of the project");
    let error = project
        .problems()
        .next()
        .expect("the file is refused")
        .to_string();
    assert!(
        error.starts_with("procedures/f.toml:3:") && error.contains("must start with the schema"),
        "{error}"
    );
}

#[test]
fn the_schema_example_project_loads_into_its_schemas() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/schema-project");
    let project = Project::load(&root).expect("the example loads");
    let tap_path = vec!["tap".to_owned(), "tap_types".to_owned()];
    assert_eq!(
        placed(&project),
        [
            ("tap.has_version()".to_owned(), tap_path.clone()),
            ("tap.ok(boolean, text)".to_owned(), tap_path.clone()),
            ("tap.pg_version()".to_owned(), tap_path.clone()),
            ("tap.pg_version_info()".to_owned(), tap_path),
            (
                "tap_util.trim_all(text[])".to_owned(),
                vec!["tap_util".to_owned()]
            ),
        ]
    );
}
