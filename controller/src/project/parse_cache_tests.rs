//! The parse cache never changes a result: an entry made for other content
//! is not used, a cache file that does not verify is ignored.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;

const PLAIN: &str = "\
-- plain CREATE: applied as CREATE OR REPLACE
CREATE FUNCTION greet(who text) RETURNS text LANGUAGE sql AS $$ SELECT 'hi ' || who $$;
CREATE OR REPLACE FUNCTION greet(who text, times int) RETURNS text LANGUAGE sql
AS $$ SELECT repeat(greet(who), times) $$;
";

const FOREIGN_TYPE: &str = "\
CREATE OR REPLACE FUNCTION uses_type() RETURNS int LANGUAGE plpgsql AS $$
DECLARE v other.t;
BEGIN RETURN 1; END $$;
";

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join(PROCEDURES_DIR)).expect("procedures dir");
    for (path, text) in files {
        std::fs::write(root.path().join(path), text).expect("write");
    }
    root
}

/// Everything a plan is made of, and the warnings, comparable.
fn summary(project: &Project) -> Vec<String> {
    let routines = project.all_routines().iter().map(|routine| {
        format!(
            "{} {:?} line {} from {}: {}",
            routine.identity,
            routine.kind,
            routine.source_line,
            routine.source_path,
            routine.create_sql
        )
    });
    let warnings = project.warnings().iter().map(ToString::to_string);
    routines.chain(warnings).collect()
}

fn load(root: &Path, cache: &Path) -> Project {
    Project::load_cached(root, cache)
        .and_then(Project::strict)
        .expect("loads")
}

fn cache_file(cache: &Path) -> PathBuf {
    // The cache is written on a thread of its own after a load.
    crate::project::parse_cache::wait_for_writes();
    let files: Vec<PathBuf> = std::fs::read_dir(cache.join("parse"))
        .expect("the cache directory exists")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one cache file per project: {files:?}");
    files.into_iter().next().expect("one")
}

#[test]
fn a_second_load_takes_every_file_from_the_cache_with_the_same_result() {
    let root = project(&[
        ("procedures/greet.sql", PLAIN),
        ("procedures/uses_type.sql", FOREIGN_TYPE),
    ]);
    let cache = tempfile::tempdir().expect("cache dir");
    let uncached = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    let first = load(root.path(), cache.path());
    assert_eq!(first.files_from_cache(), 0);
    let second = load(root.path(), cache.path());
    assert_eq!(second.files_from_cache(), 2);
    assert_eq!(summary(&second), summary(&uncached));
    assert_eq!(summary(&first), summary(&uncached));
    assert!(
        second.all_routines()[0]
            .create_sql
            .starts_with("CREATE OR REPLACE FUNCTION greet(who text)"),
        "{:?}",
        second.all_routines()[0].create_sql
    );
    assert_eq!(second.warnings().len(), 1, "{:?}", second.warnings());
}

#[test]
fn an_entry_made_for_other_content_is_not_used() {
    let root = project(&[
        ("procedures/greet.sql", PLAIN),
        ("procedures/uses_type.sql", FOREIGN_TYPE),
    ]);
    let cache = tempfile::tempdir().expect("cache dir");
    load(root.path(), cache.path());
    // Same length, same statement spans: only the content differs.
    let changed = PLAIN
        .replace("'hi '", "'yo '")
        .replace("(who text)", "(who name)");
    assert_eq!(changed.len(), PLAIN.len());
    std::fs::write(root.path().join("procedures/greet.sql"), &changed).expect("write");
    let reloaded = load(root.path(), cache.path());
    assert_eq!(reloaded.files_from_cache(), 1, "only the unchanged file");
    let uncached = Project::load(root.path())
        .and_then(Project::strict)
        .expect("loads");
    assert_eq!(summary(&reloaded), summary(&uncached));
    assert!(summary(&reloaded)[0].contains("public.greet(name)"));
    assert!(summary(&reloaded)[0].contains("'yo '"));
    // And back: the entry for the new content replaced the old one.
    assert_eq!(load(root.path(), cache.path()).files_from_cache(), 2);
}

#[test]
fn a_file_moved_to_another_schema_is_parsed_again() {
    let root = project(&[("procedures/greet.sql", PLAIN)]);
    let cache = tempfile::tempdir().expect("cache dir");
    load(root.path(), cache.path());
    std::fs::write(
        root.path().join("pgrollout.toml"),
        "[schema]\nname = \"lib\"\n",
    )
    .expect("write");
    let moved = load(root.path(), cache.path());
    assert_eq!(moved.files_from_cache(), 0);
    assert!(
        summary(&moved)[0].starts_with("lib.greet(text)"),
        "{:?}",
        summary(&moved)
    );
}

#[test]
fn a_cache_file_that_does_not_verify_is_ignored() {
    let root = project(&[
        ("procedures/greet.sql", PLAIN),
        ("procedures/uses_type.sql", FOREIGN_TYPE),
    ]);
    let cache = tempfile::tempdir().expect("cache dir");
    let expected = summary(&load(root.path(), cache.path()));
    let file = cache_file(cache.path());
    let good = std::fs::read_to_string(&file).expect("read the cache");
    let (header, body) = good.split_once('\n').expect("header line");
    let with_checksum = |body: &str| {
        let checksum = hex::encode(Sha256::digest(body.as_bytes()));
        let old = serde_json::from_str::<serde_json::Value>(header).expect("header")["body_sha256"]
            .as_str()
            .expect("checksum")
            .to_owned();
        format!("{}\n{body}", header.replace(&old, &checksum))
    };
    // Entries whose spans lie past the end of their files, with a
    // checksum that fits.
    let mut entries: serde_json::Value = serde_json::from_str(body).expect("body");
    for entry in entries.as_object_mut().expect("by path").values_mut() {
        for routine in entry["routines"].as_array_mut().expect("routines") {
            routine["start"] = serde_json::json!(10_000_000);
            routine["end"] = serde_json::json!(10_000_100);
        }
    }
    let shifted = entries.to_string();
    let corrupt = [
        ("not JSON", "garbage\n{".to_owned()),
        ("truncated", good[..good.len() / 2].to_owned()),
        ("empty", String::new()),
        ("body edited", good.replace("greet", "grEEt")),
        ("spans that do not fit", with_checksum(&shifted)),
        (
            "another build's",
            good.replacen("\"stamp\":\"", "\"stamp\":\"0", 1),
        ),
    ];
    for (what, contents) in corrupt {
        std::fs::write(&file, &contents).expect("corrupt the cache");
        let project = load(root.path(), cache.path());
        assert_eq!(
            project.files_from_cache(),
            0,
            "{what}: file(s) came from the cache"
        );
        assert_eq!(summary(&project), expected, "{what}");
        // The load wrote a good cache again.
        assert_eq!(
            load(root.path(), cache.path()).files_from_cache(),
            2,
            "{what}"
        );
    }
}

#[test]
fn a_broken_file_is_never_cached() {
    let root = project(&[("procedures/greet.sql", "CREATE FUNCTION broken( RETURNS")]);
    let cache = tempfile::tempdir().expect("cache dir");
    for _ in 0..2 {
        let project = Project::load_cached(root.path(), cache.path()).expect("loads");
        assert_eq!(project.files_from_cache(), 0);
        let problems: Vec<String> = project.problems().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("procedures/greet.sql:1:"),
            "{problems:?}"
        );
    }
}
