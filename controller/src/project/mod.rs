//! The procedure project: the directory of SQL files a plan is built from.
//!
//! A project keeps its routines in `procedures/*.sql`, one file per routine
//! name (all overloads of a name together), each with an optional sidecar
//! `procedures/<same stem>.toml` for grants, smoke tests and declared
//! dependencies. Every file is read with PostgreSQL's own parser
//! (libpg_query): identities come from the parse tree, never from pattern
//! matching on the text, and syntax errors — including those in PL/pgSQL
//! bodies — are reported with file and line before anything is deployed.

pub mod checked_sql;
mod companion;
#[cfg(test)]
mod companion_tests;
mod companion_wire;
pub mod definer;
mod error;
mod files;
mod header_tokens;
#[cfg(test)]
mod header_tokens_tests;
pub mod hostile_sql;
mod keywords;
pub mod parse_cache;
#[cfg(test)]
mod parse_cache_tests;
mod parse_sql;
mod pg_dump_scripts;
mod pgtap;
#[cfg(test)]
mod probe_tests;
pub mod project_config;
mod psql_scripts;
#[cfg(test)]
mod resilience_tests;
pub mod routine_name;
#[cfg(test)]
mod schema_tests;
mod selection;
mod session_settings;
mod sidecar;
mod syntax_error;
#[cfg(test)]
mod tests;
mod type_names;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use pgrollout_shared::routine::{Routine, SmokeTest};

pub use error::{ProjectError, ProjectWarning, SourceLocation};
pub(crate) use files::in_parallel;
use files::{clone_read_error, read};
use parse_cache::{CacheLocation, CachedFile, ParseCache};
pub use parse_sql::{is_offline_limitation, offline_limitation_reason};
use parse_sql::{parse_procedure_file, ParsedRoutine};
use project_config::{load_project_settings, SchemaSettings};
use routine_name::{edit_distance, written_identifier, RoutineName, Signature};
use sidecar::parse_sidecar;

/// Up to this many names, [`Project::load_for`] parses only the files that
/// may define them; a longer list (a batch) loads the whole project.
const MAX_NAMES_TO_PICK_FILES: usize = 32;

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
    /// Files that could not be loaded. Each blocks only the names it
    /// defines (issue 15): a broken file elsewhere never stops a deploy.
    broken: Vec<BrokenFile>,
    /// What the offline parse could not judge, for the server to decide.
    warnings: Vec<ProjectWarning>,
    /// How many source files were read and parsed.
    files_loaded: usize,
    /// How many source files the project has.
    files_total: usize,
    /// Set when only some files were loaded: a name found in none of them
    /// is looked up again in the whole project, for an exact hint.
    partial_root: Option<std::path::PathBuf>,
    #[cfg(test)]
    files_from_cache: usize,
}

/// A file that could not be loaded, with the routine names it defines as
/// far as they could be read (its scanner tokens when it does not parse).
#[derive(Debug)]
struct BrokenFile {
    path: String,
    names: Vec<String>,
    error: ProjectError,
}

impl Project {
    /// Loads every `procedures/*.sql` (sorted by file name) and its optional
    /// sidecar `procedures/<same stem>.toml`. A file that cannot be loaded
    /// does not fail the project: it is kept as a problem ([`Project::problems`])
    /// that blocks the names it defines.
    pub fn load(root: &Path) -> Result<Project, ProjectError> {
        Self::load_only(root, None, &CacheLocation::Default)
    }

    /// Loads only the files that may define one of `names` (each name as
    /// [`Project::select`] reads it), plus what their sidecars' `depends_on`
    /// name: a deploy of one routine reads what it needs, not the whole
    /// project (issue 15). A file may define a name only if its text holds
    /// the name, case aside, so the other files are not parsed at all.
    pub fn load_for(root: &Path, names: &[String]) -> Result<Project, ProjectError> {
        Self::load_only(root, Some(names), &CacheLocation::Default)
    }

    /// [`Project::load`] with the parse cache in `cache_dir` (tests).
    #[cfg(test)]
    pub fn load_cached(root: &Path, cache_dir: &Path) -> Result<Project, ProjectError> {
        Self::load_only(root, None, &CacheLocation::Dir(cache_dir.to_owned()))
    }

    /// How many files the last load took from the parse cache (tests).
    #[cfg(test)]
    pub fn files_from_cache(&self) -> usize {
        self.files_from_cache
    }

    fn load_only(
        root: &Path,
        wanted: Option<&[String]>,
        cache_location: &CacheLocation,
    ) -> Result<Project, ProjectError> {
        // The schema `pgrollout.toml` declares (`public` without one): a
        // broken project file blocks everything, since it places every name.
        let settings = load_project_settings(root)?;
        let files = list_procedure_files(root)?;
        let mut texts = read_in_parallel(root, &files);
        // Files parsed before with the same content need no parse again.
        let cache = ParseCache::open(root, cache_location);
        let mut fresh_entries: Vec<(String, CachedFile)> = Vec::new();
        let mut project = Project {
            routines: Vec::new(),
            signatures: Vec::new(),
            by_name: HashMap::new(),
            broken: Vec::new(),
            warnings: Vec::new(),
            files_loaded: 0,
            files_total: files.len(),
            partial_root: None,
            #[cfg(test)]
            files_from_cache: 0,
        };
        let mut loaded = vec![false; files.len()];
        // Many names (a batch) select most files anyway: load them all.
        let wanted = wanted.filter(|names| names.len() <= MAX_NAMES_TO_PICK_FILES);
        let mut to_load: Vec<bool> = match wanted {
            None => vec![true; files.len()],
            Some(names) => may_define(&texts, names),
        };
        if wanted.is_some() && to_load.iter().any(|load| !load) {
            project.partial_root = Some(root.to_owned());
        }
        let mut defined_at: BTreeMap<Signature, SourceLocation> = BTreeMap::new();
        let mut dependencies_to_check: Vec<(usize, Vec<(String, SourceLocation)>)> = Vec::new();
        // Rounds: the files wanted, then those their dependencies may need.
        while to_load
            .iter()
            .zip(&loaded)
            .any(|(&want, &done)| want && !done)
        {
            let batch: Vec<usize> = (0..files.len())
                .filter(|&index| to_load[index] && !loaded[index])
                .collect();
            let results =
                parse_files_in_parallel(root, &files, &settings, &cache, &mut texts, &batch);
            let mut new_dependencies = Vec::new();
            for (&file_index, loaded_file) in batch.iter().zip(results) {
                loaded[file_index] = true;
                project.files_loaded += 1;
                match loaded_file {
                    Ok((loaded_file, cache_entry)) => {
                        match cache_entry {
                            Some(entry) => {
                                fresh_entries.push((files[file_index].sql_path.clone(), entry))
                            }
                            #[cfg(test)]
                            None if cache.is_enabled() => project.files_from_cache += 1,
                            None => {}
                        }
                        if let Some(depends_on) = project.add_file(loaded_file, &mut defined_at) {
                            new_dependencies.push((file_index, depends_on));
                        }
                    }
                    Err(problem) => {
                        let (names, error) = *problem;
                        project.broken.push(BrokenFile {
                            path: files[file_index].sql_path.clone(),
                            names,
                            error,
                        })
                    }
                }
            }
            if wanted.is_some() {
                let names: Vec<String> = new_dependencies
                    .iter()
                    .flat_map(|(_, deps)| deps.iter().map(|(name, _)| name.clone()))
                    .collect();
                for (index, more) in may_define(&texts, &names).into_iter().enumerate() {
                    to_load[index] |= more;
                }
            }
            dependencies_to_check.extend(new_dependencies);
        }
        let paths: Vec<String> = files.iter().map(|file| file.sql_path.clone()).collect();
        cache.save_in_background(fresh_entries, paths);
        // Checked once every file is loaded: a dependency may be defined in
        // a file that sorts later.
        for (file_index, depends_on) in dependencies_to_check {
            for (name, at) in depends_on {
                let found = parse_name(&name).and_then(|parsed| project.lookup(&name, &parsed));
                if let Err(error) = found {
                    let sql_path = files[file_index].sql_path.clone();
                    project.block_file(
                        &sql_path,
                        ProjectError::InvalidSidecar {
                            at,
                            reason: format!("depends_on: {error}"),
                        },
                    );
                }
            }
        }
        Ok(project)
    }

    /// Adds a loaded file's routines, or records the file as broken when
    /// one of them is already defined. Returns its declared dependencies.
    fn add_file(
        &mut self,
        (file, parsed, sidecar, pgtap, settings): LoadedFile<'_>,
        defined_at: &mut BTreeMap<Signature, SourceLocation>,
    ) -> Option<Vec<(String, SourceLocation)>> {
        let names: Vec<String> = parsed.iter().map(|r| r.signature.name.clone()).collect();
        for (position, parsed_routine) in parsed.iter().enumerate() {
            let earlier = defined_at.get(&parsed_routine.signature).or_else(|| {
                parsed[..position]
                    .iter()
                    .find(|other| other.signature == parsed_routine.signature)
                    .map(|other| &other.defined_at)
            });
            if let Some(first) = earlier {
                self.broken.push(BrokenFile {
                    path: file.sql_path.clone(),
                    names,
                    error: ProjectError::DuplicateRoutine {
                        identity: parsed_routine.identity.to_string(),
                        first: first.clone(),
                        second: parsed_routine.defined_at.clone(),
                    },
                });
                return None;
            }
        }
        for (index, parsed_routine) in parsed.into_iter().enumerate() {
            let source_line = parsed_routine.defined_at.line.unwrap_or(0);
            defined_at.insert(parsed_routine.signature.clone(), parsed_routine.defined_at);
            self.warnings.extend(parsed_routine.warnings);
            self.by_name
                .entry(parsed_routine.signature.name.clone())
                .or_default()
                .push(self.signatures.len());
            self.signatures.push(parsed_routine.signature);
            self.routines.push(Routine {
                identity: parsed_routine.identity,
                kind: parsed_routine.kind,
                create_sql: parsed_routine.create_sql,
                companion_sql: parsed_routine.companion_sql,
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
                retire: None,
            });
        }
        Some(sidecar.depends_on)
    }

    /// Takes a loaded file's routines out again and records it as broken.
    fn block_file(&mut self, sql_path: &str, error: ProjectError) {
        let names: Vec<String> = self
            .routines
            .iter()
            .zip(&self.signatures)
            .filter(|(routine, _)| routine.source_path == sql_path)
            .map(|(_, signature)| signature.name.clone())
            .collect();
        // A second bad dependency of the same file: its routines are out
        // already; it blocks the same names.
        let names = match self.broken.iter().find(|b| b.path == sql_path) {
            Some(broken) if names.is_empty() => broken.names.clone(),
            _ => names,
        };
        let keep: Vec<bool> = self
            .routines
            .iter()
            .map(|routine| routine.source_path != sql_path)
            .collect();
        let mut index = 0;
        self.routines.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        let mut index = 0;
        self.signatures.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        self.by_name.clear();
        for (index, signature) in self.signatures.iter().enumerate() {
            self.by_name
                .entry(signature.name.clone())
                .or_default()
                .push(index);
        }
        self.broken.push(BrokenFile {
            path: sql_path.to_owned(),
            names,
            error,
        });
    }

    /// Every problem of the project: the files that could not be loaded.
    pub fn problems(&self) -> impl Iterator<Item = &ProjectError> {
        self.broken.iter().map(|broken| &broken.error)
    }

    /// Everything the offline parse left to the server-side checks.
    pub fn warnings(&self) -> &[ProjectWarning] {
        &self.warnings
    }

    /// The warnings about these routines.
    pub fn warnings_for(&self, routines: &[Routine]) -> Vec<&ProjectWarning> {
        let about = WarningsAbout::routines(routines);
        self.warnings
            .iter()
            .filter(|warning| about.includes(warning))
            .collect()
    }

    /// How many source files were read and parsed.
    pub fn files_loaded(&self) -> usize {
        self.files_loaded
    }

    /// How many source files the project has (`files_loaded` of them parsed).
    pub fn files_total(&self) -> usize {
        self.files_total
    }

    /// Every routine that loaded, in file order.
    pub fn all_routines(&self) -> &[Routine] {
        &self.routines
    }

    /// The project, or its first problem: for tests of single problems.
    #[cfg(test)]
    pub fn strict(mut self) -> Result<Project, ProjectError> {
        if self.broken.is_empty() {
            Ok(self)
        } else {
            Err(self.broken.remove(0).error)
        }
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
    ///
    /// A file that could not be loaded and defines (or may define) the name
    /// makes the selection fail with that file's problem: a plan never
    /// leaves out an overload it cannot read.
    pub fn select(&self, name: &str) -> Result<Vec<Routine>, ProjectError> {
        match self.select_loaded(name) {
            Err(ProjectError::UnknownProcedure { .. }) if self.partial_root.is_some() => {
                let root = self.partial_root.as_deref().unwrap_or(Path::new("."));
                Project::load(root)?.select(name)
            }
            found => found.map(|indices| {
                indices
                    .into_iter()
                    .map(|index| self.routines[index].clone())
                    .collect()
            }),
        }
    }

    /// [`Project::select`] among the files that loaded: the positions of
    /// the routines `name` designates.
    fn select_loaded(&self, name: &str) -> Result<Vec<usize>, ProjectError> {
        let parsed = parse_name(name)?;
        let blocking: Vec<String> = self
            .broken
            .iter()
            .filter(|broken| broken.names.contains(&parsed.name))
            .map(|broken| broken.error.to_string())
            .collect();
        if !blocking.is_empty() {
            return Err(ProjectError::BlockedByFile {
                name: name.to_owned(),
                problems: blocking,
            });
        }
        self.lookup(name, &parsed)
    }

    /// The positions of the routines `parsed` (the `name` as written)
    /// designates among those that loaded.
    fn lookup(&self, name: &str, parsed: &RoutineName) -> Result<Vec<usize>, ProjectError> {
        let selected: Vec<usize> = self
            .by_name
            .get(&parsed.name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&index| parsed.matches(&self.signatures[index]))
            .collect();
        if selected.is_empty() {
            return Err(ProjectError::UnknownProcedure {
                name: name.to_owned(),
                hint: self.hint_for_unknown(parsed),
            });
        }
        Ok(self.with_companion_peers(selected))
    }

    /// `selected` and the routines a companion statement ties to them: one
    /// statement naming several routines of a file (`GRANT … ON FUNCTION
    /// a(int), b(text)`) travels with each and acts on all, so a plan that
    /// takes one takes the others — the controller's edge refuses a
    /// statement acting on a routine outside its plan. A file's routines
    /// are neighbours in `routines`, and a shared statement is the same
    /// text in each.
    fn with_companion_peers(&self, mut selected: Vec<usize>) -> Vec<usize> {
        let mut next = 0;
        while let Some(&index) = selected.get(next) {
            next += 1;
            let routine = &self.routines[index];
            if routine.companion_sql.is_empty() {
                continue;
            }
            let same_file = |&peer: &usize| self.routines[peer].source_path == routine.source_path;
            let first = (0..index)
                .rev()
                .take_while(same_file)
                .last()
                .unwrap_or(index);
            let end = (index..self.routines.len())
                .take_while(same_file)
                .last()
                .map_or(index, |last| last + 1);
            for peer in first..end {
                let shares = self.routines[peer]
                    .companion_sql
                    .iter()
                    .any(|statement| routine.companion_sql.contains(statement));
                if shares && !selected.contains(&peer) {
                    selected.push(peer);
                }
            }
        }
        selected
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
        // `calcTotal` typed bare is `calctotal` to PostgreSQL, and so here:
        // say how to write the name that differs only in case.
        if let Some(cased) = self.signatures.iter().find(|signature| {
            signature.name != wanted.name && signature.name.eq_ignore_ascii_case(&wanted.name)
        }) {
            let written = match &wanted.schema {
                Some(_) => format!(
                    "{}.{}",
                    written_identifier(&cased.schema),
                    written_identifier(&cased.name)
                ),
                None => written_identifier(&cased.name),
            };
            return format!(
                "did you mean {written}? Names fold to lower case unless double-quoted, as in \
                 PostgreSQL: in a shell, write '{written}'"
            );
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

/// Which warnings are about some routines: those placed where one of their
/// statements starts (file and line).
struct WarningsAbout<'a>(std::collections::HashSet<(&'a str, u32)>);

impl<'a> WarningsAbout<'a> {
    fn routines(routines: &'a [Routine]) -> Self {
        WarningsAbout(
            routines
                .iter()
                .map(|routine| (routine.source_path.as_str(), routine.source_line))
                .collect(),
        )
    }

    fn includes(&self, warning: &ProjectWarning) -> bool {
        warning
            .at
            .line
            .is_some_and(|line| self.0.contains(&(warning.at.path.as_str(), line)))
    }
}

fn parse_name(name: &str) -> Result<RoutineName, ProjectError> {
    RoutineName::parse(name).map_err(|reason| ProjectError::InvalidRoutineName {
        name: name.to_owned(),
        reason,
    })
}

/// Which files may define one of `names`: those whose text holds the
/// routine name, ASCII case aside (a superset — the name is written in the
/// CREATE statement that defines it). A name that does not parse matches
/// nothing here and is reported by `select`.
fn may_define(texts: &[Option<Result<String, ProjectError>>], names: &[String]) -> Vec<bool> {
    let wanted: Vec<String> = names
        .iter()
        .filter_map(|name| RoutineName::parse(name).ok())
        .map(|parsed| parsed.name.to_ascii_lowercase())
        .collect();
    texts
        .iter()
        .map(|text| match text {
            Some(Ok(text)) => {
                let lower = text.to_ascii_lowercase();
                wanted.iter().any(|name| lower.contains(name.as_str()))
            }
            // Unreadable: load it, so its problem is reported if it is
            // the file of a wanted name.
            _ => true,
        })
        .collect()
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
        // The directory entry's own type (no `stat` per file: a thousand
        // routines are two thousand files); a symlink is followed.
        let file_type = entry.file_type().map_err(read_error)?;
        let is_file = if file_type.is_symlink() {
            entry.path().is_file()
        } else {
            file_type.is_file()
        };
        if file_name.starts_with('.') || !is_file {
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
    let sql_set: std::collections::HashSet<&str> = sql_stems.iter().map(String::as_str).collect();
    let sidecar_set: std::collections::HashSet<&str> =
        sidecar_stems.iter().map(String::as_str).collect();
    if let Some(orphan) = sidecar_stems
        .iter()
        .find(|stem| !sql_set.contains(stem.as_str()))
    {
        return Err(ProjectError::OrphanSidecar {
            sidecar: format!("{PROCEDURES_DIR}/{orphan}.toml"),
            expected_sql: format!("{PROCEDURES_DIR}/{orphan}.sql"),
        });
    }
    // By file name, as a listing shows them (`a.sql` before `a_b.sql`).
    let mut sorted: Vec<&str> = sql_set.into_iter().collect();
    sorted.sort_by_cached_key(|stem| format!("{stem}.sql"));
    Ok(sorted
        .into_iter()
        .map(|stem| ProcedureFile {
            sql_path: format!("{PROCEDURES_DIR}/{stem}.sql"),
            sidecar_path: sidecar_set
                .contains(stem)
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

/// A file that could not be loaded: the routine names it defines as far as
/// known, and why (boxed: the happy path stays small).
type FileProblem = Box<(Vec<String>, ProjectError)>;

/// A loaded file, with the cache entry to keep for it when it was parsed
/// now (None: it came from the cache).
type LoadResult<'a> = Result<(LoadedFile<'a>, Option<CachedFile>), FileProblem>;

/// Reads every source file (not its sidecar), spread over the cores.
/// Reading is cheap next to parsing; it lets a deploy of one routine pick
/// the files that may define it.
fn read_in_parallel(
    root: &Path,
    files: &[ProcedureFile],
) -> Vec<Option<Result<String, ProjectError>>> {
    in_parallel(files, |file| Some(read(&root.join(&file.sql_path))))
}

/// Parses the files at `indices` (and their sidecars), spread over the
/// cores: parsing dominates loading a large project. Results keep the
/// order of `indices`.
fn parse_files_in_parallel<'a>(
    root: &Path,
    files: &'a [ProcedureFile],
    project_settings: &SchemaSettings,
    cache: &ParseCache,
    texts: &mut [Option<Result<String, ProjectError>>],
    indices: &[usize],
) -> Vec<LoadResult<'a>> {
    let work: Vec<(&'a ProcedureFile, Result<String, ProjectError>)> = indices
        .iter()
        .map(|&index| {
            let text = texts[index]
                .take()
                .unwrap_or_else(|| read(&root.join(&files[index].sql_path)));
            (&files[index], text)
        })
        .collect();
    in_parallel(&work, |(file, text)| {
        load_file(root, file, project_settings, cache, text)
    })
}

fn load_file<'a>(
    root: &Path,
    file: &'a ProcedureFile,
    project_settings: &SchemaSettings,
    cache: &ParseCache,
    text: &Result<String, ProjectError>,
) -> LoadResult<'a> {
    let stem_name = || {
        let stem = file
            .sql_path
            .trim_start_matches(PROCEDURES_DIR)
            .trim_start_matches('/');
        vec![stem.trim_end_matches(".sql").to_ascii_lowercase()]
    };
    let text = match text {
        // `\set ON_ERROR_STOP on`, pg_dump's `\restrict`: blanked,
        // positions kept.
        Ok(text) => psql_scripts::without_honoured_meta_commands(text),
        Err(error) => return Err(Box::new((stem_name(), clone_read_error(error)))),
    };
    let text = text.as_ref();
    let scanned_names = || {
        let mut names = routine_names_by_scan(text);
        names.extend(stem_name());
        names
    };
    // The sidecar first: its `[schema]` places the file's unqualified names.
    // Its TOML is read once, here, for both the settings and the checks.
    let sidecar_text = match &file.sidecar_path {
        Some(sidecar_path) => {
            let text =
                read(&root.join(sidecar_path)).map_err(|e| Box::new((scanned_names(), e)))?;
            let toml = sidecar::read_sidecar(sidecar_path, &text)
                .map_err(|e| Box::new((scanned_names(), e)))?;
            Some((sidecar_path, text, toml))
        }
        None => None,
    };
    let settings = match &sidecar_text {
        Some((sidecar_path, sidecar_text, toml)) => {
            sidecar::schema_settings(toml, sidecar_path, sidecar_text, project_settings)
                .map_err(|e| Box::new((scanned_names(), e)))?
        }
        None => project_settings.clone(),
    };
    // A `SET search_path` at the file's top declares its schema and path,
    // over the project's — and must agree with its sidecar's `[schema]`.
    let sidecar_declares = sidecar_text
        .as_ref()
        .is_some_and(|(_, _, toml)| sidecar::declares_schema(toml));
    let settings = match psql_scripts::leading_search_path(&file.sql_path, text) {
        Ok(None) => settings,
        Ok(Some((declared, _))) if !sidecar_declares || declared == settings => declared,
        Ok(Some((declared, at))) => {
            let error = ProjectError::Companion {
                at,
                reason: format!(
                    "SET search_path declares {:?}, but the file's sidecar declares [schema] \
                     {:?} with search_path {:?}: keep one of them",
                    declared.search_path, settings.schema, settings.search_path
                ),
            };
            return Err(Box::new((scanned_names(), error)));
        }
        Err(error) => return Err(Box::new((scanned_names(), error))),
    };
    let key = cache.key(&file.sql_path, &settings.schema, text);
    let cached = key
        .as_deref()
        .and_then(|key| cache.lookup(&file.sql_path, key, text));
    let (parsed, cache_entry) = match cached {
        Some(parsed) => (parsed, None),
        None => {
            let parsed = parse_procedure_file(&file.sql_path, text, &settings.schema)
                .map_err(|error| Box::new((scanned_names(), error)))?;
            let entry = key.map(|key| CachedFile::new(key, &parsed));
            (parsed, entry)
        }
    };
    let names = || parsed.iter().map(|r| r.signature.name.clone()).collect();
    let sidecar = match sidecar_text {
        Some((sidecar_path, sidecar_text, toml)) => {
            parse_sidecar(toml, sidecar_path, &sidecar_text, &parsed)
                .map_err(|error| Box::new((names(), error)))?
        }
        None => sidecar::Sidecar::default(),
    };
    let pgtap = match &sidecar.pgtap {
        Some((path, named_at)) => {
            Some(pgtap::load(root, path, named_at).map_err(|e| Box::new((names(), e)))?)
        }
        None => None,
    };
    Ok(((file, parsed, sidecar, pgtap, settings), cache_entry))
}

/// The names after `CREATE [OR REPLACE] FUNCTION|PROCEDURE` in a file that
/// does not parse, from PostgreSQL's scanner: which names the file blocks.
/// Only used to keep a broken file's routines from being deployed without
/// it, never for identities.
fn routine_names_by_scan(text: &str) -> Vec<String> {
    use pg_query::protobuf::Token;
    let Ok(scan) = pg_query::scan(text) else {
        return Vec::new();
    };
    let tokens = scan.tokens;
    let mut names = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        if token.token != Token::Function as i32 && token.token != Token::Procedure as i32 {
            continue;
        }
        // The name is the last identifier before `(`: `schema.name(`.
        let name = tokens[index + 1..]
            .iter()
            .take_while(|t| t.token != Token::Ascii40 as i32)
            .take(5)
            .filter_map(|t| {
                let start = usize::try_from(t.start).ok()?;
                let end = usize::try_from(t.end).ok()?;
                text.get(start..end)
            })
            .filter(|word| *word != ".")
            .last();
        if let Some(word) = name {
            names.push(
                match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
                    Some(quoted) => quoted.to_owned(),
                    None => word.to_ascii_lowercase(),
                },
            );
        }
    }
    names
}
