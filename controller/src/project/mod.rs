//! The procedure project: the directory of SQL files a plan is built from.
//!
//! A project keeps its routines in `procedures/*.sql`, one file per routine
//! name (all overloads of a name together), each with an optional sidecar
//! `procedures/<same stem>.toml` for grants, smoke tests and declared
//! dependencies. Every file is read with PostgreSQL's own parser
//! (libpg_query): identities come from the parse tree, never from pattern
//! matching on the text, and syntax errors — including those in PL/pgSQL
//! bodies — are reported with file and line before anything is deployed.

mod error;
mod parse_sql;
mod pgtap;
#[cfg(test)]
mod probe_tests;
pub mod project_config;
pub mod routine_name;
#[cfg(test)]
mod schema_tests;
mod sidecar;
mod syntax_error;
#[cfg(test)]
mod tests;
mod type_names;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use pgrollout_shared::routine::{Routine, SmokeTest};

pub use error::{ProjectError, SourceLocation};
use parse_sql::{parse_procedure_file, ParsedRoutine};
use project_config::{load_project_settings, SchemaSettings};
use routine_name::{edit_distance, RoutineName, Signature};
use sidecar::parse_sidecar;

/// The directory under the project root that holds the routines.
pub const PROCEDURES_DIR: &str = "procedures";

/// A loaded project: every routine, in file order (files sorted by name,
/// statements in the order written).
#[derive(Debug)]
pub struct Project {
    routines: Vec<Routine>,
    /// `signatures[i]` is how `routines[i]` is matched against names.
    signatures: Vec<Signature>,
    /// Indices into `signatures` by routine name, in file order: a name can
    /// only match routines of that name, so `select` looks at those alone
    /// (a batch selects every name of a large project).
    by_name: HashMap<String, Vec<usize>>,
}

impl Project {
    /// Loads every `procedures/*.sql` (sorted by file name) and its optional
    /// sidecar `procedures/<same stem>.toml`, in the schema `pgrollout.toml`
    /// declares (`public` without one).
    pub fn load(root: &Path) -> Result<Project, ProjectError> {
        let settings = load_project_settings(root)?;
        let files = list_procedure_files(root)?;
        let mut project = Project {
            routines: Vec::new(),
            signatures: Vec::new(),
            by_name: HashMap::new(),
        };
        let mut defined_at: BTreeMap<Signature, SourceLocation> = BTreeMap::new();
        let mut dependencies_to_check = Vec::new();
        for loaded in parse_files_in_parallel(root, &files, &settings) {
            let (file, parsed, sidecar, pgtap, settings) = loaded?;
            for (index, parsed_routine) in parsed.into_iter().enumerate() {
                let source_line = parsed_routine.defined_at.line.unwrap_or(0);
                if let Some(first) = defined_at.get(&parsed_routine.signature) {
                    return Err(ProjectError::DuplicateRoutine {
                        identity: parsed_routine.identity.to_string(),
                        first: first.clone(),
                        second: parsed_routine.defined_at,
                    });
                }
                defined_at.insert(parsed_routine.signature.clone(), parsed_routine.defined_at);
                project
                    .by_name
                    .entry(parsed_routine.signature.name.clone())
                    .or_default()
                    .push(project.signatures.len());
                project.signatures.push(parsed_routine.signature);
                project.routines.push(Routine {
                    identity: parsed_routine.identity,
                    kind: parsed_routine.kind,
                    create_sql: parsed_routine.create_sql,
                    grants: sidecar.grants.clone(),
                    smoke_tests: sidecar
                        .smoke_tests
                        .iter()
                        .filter(|(routine_index, _)| *routine_index == index)
                        .map(|(_, test)| SmokeTest {
                            search_path: settings.search_path.clone(),
                            ..test.clone()
                        })
                        .collect(),
                    source_path: file.sql_path.clone(),
                    depends_on: sidecar
                        .depends_on
                        .iter()
                        .map(|(name, _)| name.clone())
                        .collect(),
                    perf_probe: sidecar
                        .perf_probe
                        .as_ref()
                        .filter(|(routine_index, _)| *routine_index == index)
                        .map(|(_, probe)| probe.clone()),
                    pgtap: pgtap.clone(),
                    source_line,
                    search_path: settings.search_path.clone(),
                });
            }
            dependencies_to_check.extend(sidecar.depends_on);
        }
        // Checked once every file is loaded: a dependency may be defined in
        // a file that sorts later.
        for (name, at) in dependencies_to_check {
            if let Err(error) = project.select(&name) {
                return Err(ProjectError::InvalidSidecar {
                    at,
                    reason: format!("depends_on: {error}"),
                });
            }
        }
        Ok(project)
    }

    /// Every routine, in file order.
    #[cfg(test)]
    pub fn routines(&self) -> &[Routine] {
        &self.routines
    }

    /// Every routine `name` designates: all overloads of that name, possibly
    /// across files. `name` is read like PostgreSQL reads an unquoted
    /// identifier (folded to lower case; quote it to keep case) and may be
    /// schema-qualified (`public.addarc`) or carry argument types
    /// (`addarc(text, text)`) to pick one overload.
    pub fn select(&self, name: &str) -> Result<Vec<Routine>, ProjectError> {
        let parsed =
            RoutineName::parse(name).map_err(|reason| ProjectError::InvalidRoutineName {
                name: name.to_owned(),
                reason,
            })?;
        let selected: Vec<Routine> = self
            .by_name
            .get(&parsed.name)
            .into_iter()
            .flatten()
            .filter(|&&index| parsed.matches(&self.signatures[index]))
            .map(|&index| self.routines[index].clone())
            .collect();
        if selected.is_empty() {
            return Err(ProjectError::UnknownProcedure {
                name: name.to_owned(),
                hint: self.hint_for_unknown(&parsed),
            });
        }
        Ok(selected)
    }

    /// The names a routine's sidecar declares it depends on (`depends_on`),
    /// as written; each resolves with [`Project::select`]. Shared by all
    /// routines of one file.
    #[cfg(test)]
    pub fn declared_dependencies<'a>(&self, routine: &'a Routine) -> &'a [String] {
        &routine.depends_on
    }

    /// "did you mean …" with the closest names, or a few known names.
    fn hint_for_unknown(&self, wanted: &RoutineName) -> String {
        let mut known: Vec<String> = self
            .signatures
            .iter()
            .map(|signature| match &wanted.schema {
                Some(_) => format!("{}.{}", signature.schema, signature.name),
                None => signature.name.clone(),
            })
            .collect();
        known.sort();
        known.dedup();
        let wanted_text = match &wanted.schema {
            Some(schema) => format!("{schema}.{}", wanted.name),
            None => wanted.name.clone(),
        };
        if wanted.arg_types.is_some() && known.contains(&wanted_text) {
            let overloads: Vec<String> = self
                .signatures
                .iter()
                .zip(&self.routines)
                .filter(|(signature, _)| {
                    RoutineName {
                        arg_types: None,
                        ..wanted.clone()
                    }
                    .matches(signature)
                })
                .map(|(_, routine)| routine.identity.to_string())
                .collect();
            return format!("its overloads are {}", overloads.join(", "));
        }
        let threshold = (wanted_text.chars().count() / 3).max(2);
        let mut close: Vec<(usize, &String)> = known
            .iter()
            .map(|candidate| (edit_distance(&wanted_text, candidate), candidate))
            .filter(|(distance, _)| *distance <= threshold)
            .collect();
        close.sort();
        if !close.is_empty() {
            let names: Vec<&str> = close
                .iter()
                .take(3)
                .map(|(_, name)| name.as_str())
                .collect();
            return format!("did you mean {}?", names.join(", "));
        }
        const LISTED: usize = 8;
        let listed: Vec<&str> = known.iter().take(LISTED).map(String::as_str).collect();
        let more = known.len().saturating_sub(LISTED);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("known routines: {}{more}", listed.join(", "))
    }
}

/// A SQL file and its sidecar, as project-relative paths.
struct ProcedureFile {
    sql_path: String,
    sidecar_path: Option<String>,
}

fn list_procedure_files(root: &Path) -> Result<Vec<ProcedureFile>, ProjectError> {
    let dir = root.join(PROCEDURES_DIR);
    if !dir.is_dir() {
        return Err(ProjectError::NoProceduresDirectory { dir });
    }
    let read_error = |source| ProjectError::ReadDirectory {
        dir: dir.clone(),
        source,
    };
    let mut sql_stems = Vec::new();
    let mut sidecar_stems = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            return Err(ProjectError::FileNameNotUtf8 {
                path: format!("{PROCEDURES_DIR}/{}", file_name.to_string_lossy()),
            });
        };
        if file_name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        if let Some(stem) = file_name.strip_suffix(".sql") {
            sql_stems.push(stem.to_owned());
        } else if let Some(stem) = file_name.strip_suffix(".toml") {
            sidecar_stems.push(stem.to_owned());
        }
    }
    if sql_stems.is_empty() {
        return Err(ProjectError::NoProcedureFiles { dir });
    }
    // A sidecar whose name matches no SQL file (a typo) would otherwise be
    // silently ignored, and its grants and tests with it.
    if let Some(orphan) = sidecar_stems.iter().find(|stem| !sql_stems.contains(stem)) {
        return Err(ProjectError::OrphanSidecar {
            sidecar: format!("{PROCEDURES_DIR}/{orphan}.toml"),
            expected_sql: format!("{PROCEDURES_DIR}/{orphan}.sql"),
        });
    }
    sql_stems.sort_by_key(|stem| format!("{stem}.sql"));
    Ok(sql_stems
        .into_iter()
        .map(|stem| ProcedureFile {
            sql_path: format!("{PROCEDURES_DIR}/{stem}.sql"),
            sidecar_path: sidecar_stems
                .contains(&stem)
                .then(|| format!("{PROCEDURES_DIR}/{stem}.toml")),
        })
        .collect())
}

/// One source file, parsed, with its sidecar, the pgTAP file it names and
/// the schema settings it was read with.
type LoadedFile<'a> = (
    &'a ProcedureFile,
    Vec<ParsedRoutine>,
    sidecar::Sidecar,
    Option<pgrollout_shared::routine::PgtapScript>,
    SchemaSettings,
);

/// Reads and parses every file (and its sidecar), spread over the cores:
/// parsing dominates loading a large project. Results keep file order, so
/// the first error reported is the first in file order, as when sequential.
fn parse_files_in_parallel<'a>(
    root: &Path,
    files: &'a [ProcedureFile],
    project_settings: &SchemaSettings,
) -> Vec<Result<LoadedFile<'a>, ProjectError>> {
    let load = |file: &'a ProcedureFile| {
        let text = read(&root.join(&file.sql_path))?;
        // The sidecar first: its `[schema]` places the file's unqualified names.
        let sidecar_text = match &file.sidecar_path {
            Some(sidecar_path) => Some((sidecar_path, read(&root.join(sidecar_path))?)),
            None => None,
        };
        let settings = match &sidecar_text {
            Some((sidecar_path, sidecar_text)) => {
                sidecar::schema_settings(sidecar_path, sidecar_text, project_settings)?
            }
            None => project_settings.clone(),
        };
        let parsed = parse_procedure_file(&file.sql_path, &text, &settings.schema)?;
        let sidecar = match &sidecar_text {
            Some((sidecar_path, sidecar_text)) => {
                parse_sidecar(sidecar_path, sidecar_text, &parsed)?
            }
            None => sidecar::Sidecar::default(),
        };
        let pgtap = match &sidecar.pgtap {
            Some((path, named_at)) => Some(pgtap::load(root, path, named_at)?),
            None => None,
        };
        Ok((file, parsed, sidecar, pgtap, settings))
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if workers < 2 || files.len() < 32 {
        return files.iter().map(load).collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(load).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Largest source file the loader reads: a routine's SQL beyond this is far
/// more likely a mistake (a data dump, a generated blob) than a routine.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<String, ProjectError> {
    let read_error = |source| ProjectError::ReadFile {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read_error)?.len();
    if bytes > MAX_FILE_BYTES {
        return Err(ProjectError::FileTooLarge {
            path: path.to_owned(),
            bytes,
            limit: MAX_FILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}
