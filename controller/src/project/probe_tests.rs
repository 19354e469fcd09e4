//! Loader tests for the sidecar's `[perf]` probe and `[tests] pgtap` file.

use super::*;

const TWO_OVERLOADS: &str = "\
CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';

-- the second one
CREATE FUNCTION f(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b';
";

fn load_project(files: &[(&str, &str)]) -> Result<Project, ProjectError> {
    let root = tempfile::tempdir().expect("temp dir");
    for (path, contents) in files {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, contents).expect("write");
    }
    Project::load(root.path()).and_then(Project::strict)
}

#[test]
fn a_perf_probe_attaches_to_the_routine_it_names_with_default_runs() {
    let project = load_project(&[
        ("procedures/f.sql", TWO_OVERLOADS),
        (
            "procedures/f.toml",
            "[perf]\nroutine = \"f(int, int)\"\ncall = \"SELECT f(1, 2)\"\n",
        ),
    ])
    .expect("valid");
    let routines = project.routines();
    assert_eq!(routines[0].perf_probe, None);
    let probe = routines[1]
        .perf_probe
        .as_ref()
        .expect("second overload probed");
    assert_eq!(probe.call_sql, "SELECT f(1, 2)");
    assert_eq!(probe.runs, pgrollout_shared::routine::DEFAULT_PERF_RUNS);
    assert_eq!(routines[0].source_line, 1);
    assert_eq!(routines[1].source_line, 4);
}

#[test]
fn perf_probe_mistakes_are_refused_with_their_place() {
    let refused = |sidecar: &str| {
        load_project(&[
            ("procedures/f.sql", TWO_OVERLOADS),
            ("procedures/f.toml", sidecar),
        ])
        .expect_err("refused")
        .to_string()
    };
    let error = refused("[perf]\ncall = \"SELECT f(1)\"\n");
    assert!(
        error.contains("so [perf] must say which one it measures"),
        "{error}"
    );
    let error = refused("[perf]\nroutine = \"f(int)\"\ncall = \"SELECT f(1)\"\nruns = 0\n");
    assert!(error.starts_with("procedures/f.toml:4:"), "{error}");
    assert!(error.contains("runs must be 1 to 1000"), "{error}");
    let error = refused("[perf]\nroutine = \"f(int)\"\ncall = \"SELECT f(1); SELECT 2\"\n");
    assert!(error.contains("the call holds 2 statements"), "{error}");
    let error = refused("[perf]\nroutine = \"f(int)\"\ncall = \"SELECT f(1)\"\nrun = 3\n");
    assert!(error.contains("unknown field `run`"), "{error}");
}

#[test]
fn a_pgtap_file_is_read_split_and_shared_by_the_files_routines() {
    let project = load_project(&[
        ("procedures/f.sql", TWO_OVERLOADS),
        (
            "procedures/f.toml",
            "[tests]\npgtap = \"tests/f.pgtap.sql\"\n",
        ),
        (
            "tests/f.pgtap.sql",
            "BEGIN;\nSELECT plan(1);\nSELECT is(f(1), 1, 'identity');\nROLLBACK;\n",
        ),
    ])
    .expect("valid");
    for routine in project.routines() {
        let script = routine.pgtap.as_ref().expect("script");
        assert_eq!(script.path, "tests/f.pgtap.sql");
        assert_eq!(
            script.statements,
            vec!["SELECT plan(1)", "SELECT is(f(1), 1, 'identity')"]
        );
    }
}

#[test]
fn a_pgtap_path_outside_the_project_or_missing_is_refused() {
    let refused = |path: &str| {
        load_project(&[
            ("procedures/f.sql", TWO_OVERLOADS),
            (
                "procedures/f.toml",
                &format!("[tests]\npgtap = \"{path}\"\n"),
            ),
        ])
        .expect_err("refused")
        .to_string()
    };
    assert!(refused("../x.sql").contains("name a .sql file inside the project"));
    assert!(refused("/etc/x.sql").contains("name a .sql file inside the project"));
    let error = refused("tests/none.sql");
    assert!(error.starts_with("procedures/f.toml:2:"), "{error}");
    assert!(error.contains("no such file in the project"), "{error}");
}
