//! A cache of parsed project files, so that loading a project whose files
//! did not change costs reading and hashing them, not parsing them again
//! (issue 15: the CLI's parse of a 1,000-routine project was most of an
//! unchanged redeploy).
//!
//! It can never change a result:
//! - an entry is used only for the file it was made from: its key is the
//!   SHA-256 of the file's path, its text and the schema its unqualified
//!   names belong to (everything the parse reads), so a file whose content
//!   changed in any way misses;
//! - the whole cache belongs to one build of pgrollout: its stamp is the
//!   running executable's size and modification time, so a new build (whose
//!   parser may read files differently) starts afresh;
//! - a cache file that does not verify — truncated, edited, not JSON, the
//!   checksum of its body wrong, an entry whose offsets do not fit the file
//!   — is ignored as a whole, and the files are parsed;
//! - only files that parsed without a problem are kept: a broken file is
//!   parsed every time, and reports exactly what it did.
//!
//! What is kept is small: the identities and the byte span of each
//! statement (the CREATE and its companion statements), never the SQL itself (`create_sql` is cut from the file as
//! read now). It lives outside the project, so it never makes a git
//! checkout dirty: `$PGROLLOUT_CACHE_DIR` (`off` disables it), else
//! `$XDG_CACHE_HOME/pgrollout`, else `~/.cache/pgrollout`, in
//! `parse/<hash of the project's path>.json`, written whole to a temporary
//! file and renamed into place (two CLIs at once: the last one wins).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgrollout_shared::routine::{RoutineIdentity, RoutineKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{ProjectWarning, SourceLocation};
use super::parse_sql::{ParsedRoutine, StatementSpan};
use super::routine_name::Signature;

/// Changes whenever what an entry holds changes.
const FORMAT: &str = "pgrollout-parse-cache-v2";

/// Where the cache is kept, if anywhere.
#[derive(Clone, Debug)]
pub enum CacheLocation {
    /// `$PGROLLOUT_CACHE_DIR`, `$XDG_CACHE_HOME/pgrollout` or
    /// `~/.cache/pgrollout` (in unit tests: no cache, unless a test asks).
    Default,
    /// This directory (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Dir(PathBuf),
}

impl CacheLocation {
    fn directory(&self) -> Option<PathBuf> {
        match self {
            CacheLocation::Dir(dir) => Some(dir.clone()),
            // Unit tests never write into the home of whoever runs them.
            CacheLocation::Default if cfg!(test) => None,
            CacheLocation::Default => {
                let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
                if let Some(dir) = std::env::var_os("PGROLLOUT_CACHE_DIR") {
                    return (!dir.is_empty() && dir != "off").then(|| PathBuf::from(dir));
                }
                non_empty("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".cache")))
                    .map(|dir| dir.join("pgrollout"))
            }
        }
    }
}

/// The cache of one project, as read at the start of a load.
pub struct ParseCache {
    /// The cache file; None when there is no cache.
    file: Option<PathBuf>,
    stamp: String,
    entries: BTreeMap<String, CachedFile>,
}

/// One parsed file: its key and its routines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedFile {
    key: String,
    routines: Vec<CachedRoutine>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedRoutine {
    schema: String,
    name: String,
    arg_types: Vec<String>,
    comparable_arg_types: Vec<String>,
    procedure: bool,
    start: usize,
    end: usize,
    or_replace_after: Option<usize>,
    line: Option<u32>,
    column: Option<u32>,
    warnings: Vec<CachedWarning>,
    /// Byte ranges of the companion statements acting on the routine
    /// (GRANT, COMMENT ON, …), in file order: spans, like the CREATE.
    companions: Vec<(usize, usize)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedWarning {
    line: Option<u32>,
    column: Option<u32>,
    message: String,
}

/// The first line of a cache file: what it is for, and the checksum of the
/// rest, so a cache file changed in any way is not used.
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    stamp: String,
    body_sha256: String,
}

impl ParseCache {
    /// A file's key: everything the parse of it reads. None without a
    /// cache (nothing to hash for).
    pub fn key(&self, sql_path: &str, default_schema: &str, text: &str) -> Option<String> {
        self.file.as_ref()?;
        let mut hasher = Sha256::new();
        for part in [FORMAT, sql_path, default_schema] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update(text.as_bytes());
        Some(hex::encode(hasher.finalize()))
    }

    #[cfg(test)]
    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    /// The cache of the project at `root`: empty when there is none or it
    /// does not verify.
    pub fn open(root: &Path, location: &CacheLocation) -> ParseCache {
        // What an earlier load of this process wrote is read back whole.
        wait_for_writes();
        let stamp = build_stamp();
        let file = location.directory().map(|dir| {
            let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
            let digest = Sha256::digest(root.to_string_lossy().as_bytes());
            dir.join("parse")
                .join(format!("{}.json", hex::encode(&digest[..16])))
        });
        let entries = file
            .as_deref()
            .and_then(|file| read_entries(file, &stamp))
            .unwrap_or_default();
        ParseCache {
            file,
            stamp,
            entries,
        }
    }

    /// The routines of `sql_path` if the cache holds them for this very
    /// `key` and they fit `text`.
    pub fn lookup(&self, sql_path: &str, key: &str, text: &str) -> Option<Vec<ParsedRoutine>> {
        let entry = self
            .entries
            .get(sql_path)
            .filter(|entry| entry.key == key)?;
        entry
            .routines
            .iter()
            .map(|cached| cached.to_parsed(sql_path, text))
            .collect()
    }

    /// Keeps `fresh` (newly parsed files, by path) with the entries of the
    /// files in `paths` that are still valid, and writes the cache when
    /// anything changed. Best effort: a cache that cannot be written is
    /// no reason to fail a deploy.
    pub fn save(mut self, fresh: Vec<(String, CachedFile)>, paths: &[&str]) {
        let Some(file) = self.file.take() else {
            return;
        };
        let before = self.entries.len();
        let paths: std::collections::HashSet<&str> = paths.iter().copied().collect();
        self.entries.retain(|path, _| paths.contains(path.as_str()));
        let removed = self.entries.len() != before;
        if fresh.is_empty() && !removed {
            return;
        }
        self.entries.extend(fresh);
        if let Err(error) = write_entries(&file, &self.stamp, &self.entries) {
            tracing::debug!(cache = %file.display(), %error, "the parse cache was not written");
        }
    }

    /// [`ParseCache::save`] on a thread of its own (issue 15): the file is
    /// serialized and written while the CLI goes on to plan and submit. The
    /// next [`ParseCache::open`] of this process and the process's exit
    /// ([`wait_for_writes`]) wait for it.
    pub fn save_in_background(self, fresh: Vec<(String, CachedFile)>, paths: Vec<String>) {
        if self.file.is_none() {
            return;
        }
        let write = std::thread::spawn(move || {
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            self.save(fresh, &paths);
        });
        WRITES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(write);
    }
}

/// Cache writes still running ([`ParseCache::save_in_background`]).
static WRITES: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits until every cache write this process started is on disk (or gave
/// up): before a cache is read again, and before the process exits, so no
/// write is cut off half-way (a cut-off one would only be ignored as
/// corrupt, but then the next run parses everything again).
pub fn wait_for_writes() {
    // The lock is held while joining: a second caller (another thread of the
    // process) must not find the list empty and read the cache while the
    // first is still joining the write it needs. The writers never take it.
    let mut writes = WRITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for write in writes.drain(..) {
        // A write that panicked wrote nothing usable: the cache is advisory.
        let _ = write.join();
    }
}

impl CachedFile {
    /// The entry for a file that parsed into `routines`.
    pub fn new(key: String, routines: &[ParsedRoutine]) -> CachedFile {
        CachedFile {
            key,
            routines: routines.iter().map(CachedRoutine::of).collect(),
        }
    }
}

impl CachedRoutine {
    fn of(parsed: &ParsedRoutine) -> CachedRoutine {
        CachedRoutine {
            schema: parsed.identity.schema.clone(),
            name: parsed.identity.name.clone(),
            arg_types: parsed.identity.arg_types.clone(),
            comparable_arg_types: parsed.signature.arg_types.clone(),
            procedure: parsed.kind == RoutineKind::Procedure,
            start: parsed.span.start,
            end: parsed.span.end,
            or_replace_after: parsed.span.or_replace_after,
            line: parsed.defined_at.line,
            column: parsed.defined_at.column,
            warnings: parsed
                .warnings
                .iter()
                .map(|warning| CachedWarning {
                    line: warning.at.line,
                    column: warning.at.column,
                    message: warning.message.clone(),
                })
                .collect(),
            companions: parsed
                .companion_spans
                .iter()
                .map(|span| (span.start, span.end))
                .collect(),
        }
    }

    /// The routine again; None when its span does not fit `text`.
    fn to_parsed(&self, sql_path: &str, text: &str) -> Option<ParsedRoutine> {
        let span = StatementSpan {
            start: self.start,
            end: self.end,
            or_replace_after: self.or_replace_after,
        };
        let spliced_inside = span
            .or_replace_after
            .is_none_or(|after| span.start < after && after <= span.end);
        if span.start >= span.end || !spliced_inside {
            return None;
        }
        let create_sql = span.create_sql(text)?;
        let companion_spans: Vec<StatementSpan> = self
            .companions
            .iter()
            .map(|&(start, end)| StatementSpan {
                start,
                end,
                or_replace_after: None,
            })
            .collect();
        let companion_sql = companion_spans
            .iter()
            .map(|span| (span.start < span.end).then(|| span.create_sql(text))?)
            .collect::<Option<Vec<String>>>()?;
        let at = |line, column| SourceLocation {
            path: sql_path.to_owned(),
            line,
            column,
        };
        Some(ParsedRoutine {
            identity: RoutineIdentity {
                schema: self.schema.clone(),
                name: self.name.clone(),
                arg_types: self.arg_types.clone(),
            },
            signature: Signature {
                schema: self.schema.clone(),
                name: self.name.clone(),
                arg_types: self.comparable_arg_types.clone(),
            },
            kind: if self.procedure {
                RoutineKind::Procedure
            } else {
                RoutineKind::Function
            },
            create_sql,
            defined_at: at(self.line, self.column),
            warnings: self
                .warnings
                .iter()
                .map(|warning| ProjectWarning {
                    at: at(warning.line, warning.column),
                    message: warning.message.clone(),
                })
                .collect(),
            span,
            companion_sql,
            companion_spans,
        })
    }
}

/// This build of pgrollout: the running executable's size and modification
/// time (a rebuild changes them), with the version for good measure.
fn build_stamp() -> String {
    let executable = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|metadata| {
            let modified = metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_nanos());
            format!("{}:{modified}", metadata.len())
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{}:{executable}", env!("CARGO_PKG_VERSION"))
}

fn read_entries(file: &Path, stamp: &str) -> Option<BTreeMap<String, CachedFile>> {
    let contents = std::fs::read(file).ok()?;
    let newline = contents.iter().position(|&byte| byte == b'\n')?;
    let (header, body) = (&contents[..newline], &contents[newline + 1..]);
    let header: Header = serde_json::from_slice(header).ok()?;
    let verified = header.format == FORMAT
        && header.stamp == stamp
        && header.body_sha256 == hex::encode(Sha256::digest(body));
    if !verified {
        return None;
    }
    serde_json::from_slice(body).ok()
}

fn write_entries(
    file: &Path,
    stamp: &str,
    entries: &BTreeMap<String, CachedFile>,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(entries)?;
    let header = serde_json::to_vec(&Header {
        format: FORMAT.to_owned(),
        stamp: stamp.to_owned(),
        body_sha256: hex::encode(Sha256::digest(&body)),
    })?;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name().map_or_else(
            || "cache".into(),
            |name| name.to_string_lossy().into_owned()
        ),
        std::process::id()
    ));
    let mut contents = header;
    contents.push(b'\n');
    contents.extend_from_slice(&body);
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}
