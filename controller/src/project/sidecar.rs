//! The optional `procedures/<stem>.toml` next to a SQL file: grants, smoke
//! tests, declared dependencies, a performance probe (`[perf]`) and a pgTAP
//! test file (`[tests] pgtap`) for the routines of that file.

use std::time::Duration;

use pgrollout_shared::routine::{
    ExpectedColumn, Grant, Grantee, PerfProbe, Privilege, SmokeTest, DEFAULT_PERF_RUNS,
    DEFAULT_SMOKE_MAX_DURATION, MAX_PERF_RUNS, MAX_SMOKE_MAX_DURATION,
};
use serde::Deserialize;
use toml::Spanned;

use super::error::{ProjectError, SourceLocation};
use super::hostile_sql;
use super::parse_sql::ParsedRoutine;
use super::project_config::{SchemaSettings, SchemaTable};
use super::routine_name::{toml_string, written_identity, RoutineName};

/// The sidecar as written. Unknown keys are refused: a typo in a deployment
/// tool's input must fail loudly.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarFile {
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    grants: Vec<GrantEntry>,
    #[serde(default)]
    smoke_tests: Vec<SmokeTestEntry>,
    perf: Option<PerfEntry>,
    tests: Option<TestsEntry>,
    /// `[schema]`: this file's routines live in another schema than the
    /// project's (read by [`schema_settings`], before the SQL is parsed).
    schema: Option<SchemaTable>,
}

/// `[perf]`: one probe per file (a file holds the overloads of one name;
/// `routine` picks the overload when there are several).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerfEntry {
    call: Spanned<String>,
    runs: Option<Spanned<u32>>,
    routine: Option<Spanned<String>>,
}

/// `[tests]`: test files that belong to the routines of this file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsEntry {
    /// Project-relative path of a pgTAP file.
    pgtap: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    privilege: Spanned<String>,
    to: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmokeTestEntry {
    name: Spanned<String>,
    call: Spanned<String>,
    routine: Option<Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    max_duration: Option<Duration>,
    #[serde(default)]
    allow_warnings: bool,
    #[serde(default)]
    expect_columns: Vec<ExpectedColumnEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedColumnEntry {
    name: Spanned<String>,
    #[serde(rename = "type")]
    type_name: Spanned<String>,
}

/// A sidecar checked against the routines of its SQL file.
#[derive(Debug, Default)]
pub struct Sidecar {
    pub grants: Vec<Grant>,
    /// Smoke tests with the index (into the file's routines) they belong to.
    pub smoke_tests: Vec<(usize, SmokeTest)>,
    /// Declared dependencies as written, with where they were written.
    pub depends_on: Vec<(String, SourceLocation)>,
    /// The `[perf]` probe with the index of the routine it measures.
    pub perf_probe: Option<(usize, PerfProbe)>,
    /// The `[tests] pgtap` path as written (project-relative), and where.
    pub pgtap: Option<(String, SourceLocation)>,
}

/// The schema settings of the file whose sidecar is at `path` (contents
/// `text`): its `[schema]` table over the project's `inherited` ones. Read
/// before the SQL file, whose unqualified names it places.
/// Whether the sidecar declares a `[schema]` of its own.
pub fn declares_schema(file: &SidecarFile) -> bool {
    file.schema.is_some()
}

pub fn schema_settings(
    file: &SidecarFile,
    path: &str,
    text: &str,
    inherited: &SchemaSettings,
) -> Result<SchemaSettings, ProjectError> {
    match &file.schema {
        Some(table) => table.resolve(path, text, inherited),
        None => Ok(inherited.clone()),
    }
}

/// The sidecar at project-relative `path` (contents `text`) as TOML, read
/// once for both [`schema_settings`] and [`parse_sidecar`].
pub fn read_sidecar(path: &str, text: &str) -> Result<SidecarFile, ProjectError> {
    toml::from_str(text).map_err(|error| ProjectError::InvalidSidecar {
        at: error.span().map_or_else(
            || SourceLocation::file(path),
            |span| SourceLocation::at_offset(path, text, span.start),
        ),
        reason: error.message().trim_end().to_owned(),
    })
}

/// Checks the sidecar `file` read from project-relative `path` (contents
/// `text`) against the `routines` of its SQL file.
pub fn parse_sidecar(
    file: SidecarFile,
    path: &str,
    text: &str,
    routines: &[ParsedRoutine],
) -> Result<Sidecar, ProjectError> {
    let at = |span: std::ops::Range<usize>| SourceLocation::at_offset(path, text, span.start);
    let invalid = |span: std::ops::Range<usize>, reason: String| ProjectError::InvalidSidecar {
        at: at(span),
        reason,
    };

    let mut grants = Vec::new();
    for entry in &file.grants {
        let privilege = Privilege::parse(entry.privilege.get_ref()).ok_or_else(|| {
            invalid(
                entry.privilege.span(),
                format!(
                    "{:?} is not a routine privilege: use EXECUTE or ALL",
                    entry.privilege.get_ref()
                ),
            )
        })?;
        if entry.to.get_ref().is_empty() {
            return Err(invalid(
                entry.to.span(),
                "a grant needs at least one role in `to` (a role name or PUBLIC)".to_owned(),
            ));
        }
        for role in entry.to.get_ref() {
            let grantee = Grantee::parse(role.get_ref())
                .map_err(|reason| invalid(role.span(), format!("role name {reason}")))?;
            grants.push(Grant { privilege, grantee });
        }
    }

    let mut smoke_tests: Vec<(usize, SmokeTest)> = Vec::new();
    for entry in &file.smoke_tests {
        let name = entry.name.get_ref().trim();
        if name.is_empty() {
            return Err(invalid(
                entry.name.span(),
                "a smoke test needs a name".to_owned(),
            ));
        }
        if smoke_tests.iter().any(|(_, test)| test.name == name) {
            return Err(invalid(
                entry.name.span(),
                format!("two smoke tests are named {name:?}; give each a distinct name"),
            ));
        }
        hostile_sql::check_call(entry.call.get_ref())
            .map_err(|reason| invalid(entry.call.span(), reason))?;
        let routine_index = match &entry.routine {
            Some(routine) => match_routine(routine.get_ref(), routines)
                .map_err(|reason| invalid(routine.span(), reason))?,
            None if routines.len() == 1 => 0,
            None => {
                return Err(invalid(
                    entry.name.span(),
                    format!(
                    "this file defines {} routines, so smoke test {name:?} must say which one it \
                         tests, e.g. routine = {}",
                    routines.len(),
                    toml_string(&written_identity(&routines[0].identity))
                ),
                ))
            }
        };
        let max_duration = entry.max_duration.unwrap_or(DEFAULT_SMOKE_MAX_DURATION);
        if max_duration.is_zero() || max_duration > MAX_SMOKE_MAX_DURATION {
            return Err(invalid(
                entry.name.span(),
                format!(
                    "max_duration of smoke test {name:?} must be more than 0 and at most {}",
                    humantime::format_duration(MAX_SMOKE_MAX_DURATION)
                ),
            ));
        }
        let expect_columns = entry
            .expect_columns
            .iter()
            .map(|column| {
                if column.name.get_ref().is_empty() {
                    return Err(invalid(
                        column.name.span(),
                        "a column name must not be empty".to_owned(),
                    ));
                }
                check_type_name(column.type_name.get_ref())
                    .map_err(|reason| invalid(column.type_name.span(), reason))?;
                Ok(ExpectedColumn {
                    name: column.name.get_ref().clone(),
                    type_name: column.type_name.get_ref().trim().to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        smoke_tests.push((
            routine_index,
            SmokeTest {
                name: name.to_owned(),
                call_sql: entry.call.get_ref().trim().to_owned(),
                expect_columns,
                max_duration,
                allow_warnings: entry.allow_warnings,
                // The routine's, set when the project assembles it.
                search_path: Vec::new(),
            },
        ));
    }

    let mut depends_on = Vec::new();
    for dependency in &file.depends_on {
        RoutineName::parse(dependency.get_ref()).map_err(|reason| {
            invalid(
                dependency.span(),
                format!("{:?} is not a routine name: {reason}", dependency.get_ref()),
            )
        })?;
        depends_on.push((dependency.get_ref().clone(), at(dependency.span())));
    }

    let perf_probe = match &file.perf {
        Some(entry) => Some(perf_probe(entry, routines, &invalid)?),
        None => None,
    };
    let pgtap = match &file.tests {
        Some(tests) => {
            let written = tests.pgtap.get_ref().trim();
            let path = std::path::Path::new(written);
            let escapes = path.is_absolute()
                || path
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)));
            if written.is_empty() || escapes || !written.ends_with(".sql") {
                return Err(invalid(
                    tests.pgtap.span(),
                    format!(
                        "pgtap = {written:?}: name a .sql file inside the project, relative to its \
                         root, e.g. \"tests/addarc.pgtap.sql\""
                    ),
                ));
            }
            Some((written.to_owned(), at(tests.pgtap.span())))
        }
        None => None,
    };

    Ok(Sidecar {
        grants,
        smoke_tests,
        depends_on,
        perf_probe,
        pgtap,
    })
}

/// `[perf]` checked: one statement, a sensible number of runs, and the
/// routine it measures.
fn perf_probe(
    entry: &PerfEntry,
    routines: &[ParsedRoutine],
    invalid: &impl Fn(std::ops::Range<usize>, String) -> ProjectError,
) -> Result<(usize, PerfProbe), ProjectError> {
    hostile_sql::check_call(entry.call.get_ref())
        .map_err(|reason| invalid(entry.call.span(), reason))?;
    let runs = match &entry.runs {
        Some(runs) if *runs.get_ref() == 0 || *runs.get_ref() > MAX_PERF_RUNS => {
            return Err(invalid(
                runs.span(),
                format!("runs must be 1 to {MAX_PERF_RUNS} (default {DEFAULT_PERF_RUNS})"),
            ))
        }
        Some(runs) => *runs.get_ref(),
        None => DEFAULT_PERF_RUNS,
    };
    let index = match &entry.routine {
        Some(routine) => match_routine(routine.get_ref(), routines)
            .map_err(|reason| invalid(routine.span(), reason))?,
        None if routines.len() == 1 => 0,
        None => {
            return Err(invalid(
                entry.call.span(),
                format!(
                    "this file defines {} routines, so [perf] must say which one it measures, \
                     e.g. routine = {}",
                    routines.len(),
                    toml_string(&written_identity(&routines[0].identity))
                ),
            ))
        }
    };
    Ok((
        index,
        PerfProbe {
            call_sql: entry.call.get_ref().trim().to_owned(),
            runs,
        },
    ))
}

/// The index of the routine `written` designates among `routines`.
fn match_routine(written: &str, routines: &[ParsedRoutine]) -> Result<usize, String> {
    let name =
        RoutineName::parse(written).map_err(|reason| format!("routine {written:?}: {reason}"))?;
    let matching: Vec<usize> = routines
        .iter()
        .enumerate()
        .filter(|(_, routine)| name.matches(&routine.signature))
        .map(|(index, _)| index)
        .collect();
    let defined = || {
        routines
            .iter()
            .map(|routine| routine.identity.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match matching.as_slice() {
        [index] => Ok(*index),
        [] => Err(format!(
            "routine {written:?} is not defined in this file, which defines {}",
            defined()
        )),
        _ => Err(format!(
            "routine {written:?} matches several overloads ({}); add the argument types, e.g. \
             routine = {}",
            defined(),
            toml_string(&written_identity(&routines[matching[0]].identity))
        )),
    }
}

/// Expected column types are resolved by the database at test time (so
/// `int4` matches `integer`); here they only have to be type names.
fn check_type_name(type_name: &str) -> Result<(), String> {
    let not_a_type = || format!("{type_name:?} is not a type name, e.g. text or integer");
    if type_name.contains(';') || type_name.contains('\0') {
        return Err(not_a_type());
    }
    pg_query::parse(type_name, pg_query::ParserOptions::TYPE_NAME)
        .map(|_| ())
        .map_err(|_| not_a_type())
}
