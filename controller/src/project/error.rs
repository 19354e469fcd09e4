//! What can go wrong loading a project, phrased for the operator who has to
//! fix the file: where (`procedures/addarc.sql:12:5`), what, and what to do.

use std::fmt;
use std::path::PathBuf;

/// A place in a project file: project-relative path, and the 1-based line
/// and column (in characters) when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    pub path: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl SourceLocation {
    /// The whole file, no position.
    pub fn file(path: &str) -> Self {
        SourceLocation {
            path: path.to_owned(),
            line: None,
            column: None,
        }
    }

    /// The position of a byte offset into `text`, the file's contents.
    /// An offset past the end or inside a character points at the end.
    pub fn at_offset(path: &str, text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        SourceLocation {
            path: path.to_owned(),
            line: u32::try_from(before.matches('\n').count() + 1).ok(),
            column: u32::try_from(before[line_start..].chars().count() + 1).ok(),
        }
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Something the loader could not judge and leaves to the server-side
/// checks: shown, never blocking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectWarning {
    pub at: SourceLocation,
    pub message: String,
}

impl fmt::Display for ProjectWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A project that cannot be loaded, or a name that selects nothing.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "no procedures directory at {}: a project keeps its routines in procedures/*.sql; \
         check the project path",
        dir.display()
    )]
    NoProceduresDirectory { dir: PathBuf },

    #[error("cannot list {}", dir.display())]
    ReadDirectory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} is {bytes} bytes, over the limit of {limit} bytes for one source file; split it or remove what is not a routine",
        path.display()
    )]
    FileTooLarge {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },

    #[error(
        "{at}: the file is not UTF-8 (byte 0x{byte:02X}): pgrollout reads files as UTF-8, as psql \
         does with client_encoding UTF8; convert it, e.g. `iconv -f LATIN1 -t UTF-8`"
    )]
    NotUtf8 { at: SourceLocation, byte: u8 },

    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: file name is not valid UTF-8; rename it")]
    FileNameNotUtf8 { path: String },

    #[error(
        "{} holds no .sql files: add one file per routine name, e.g. procedures/addarc.sql",
        dir.display()
    )]
    NoProcedureFiles { dir: PathBuf },

    #[error(
        "{sidecar} has no matching {expected_sql}: a sidecar must share its SQL file's name; \
         rename or remove it"
    )]
    OrphanSidecar {
        sidecar: String,
        expected_sql: String,
    },

    #[error(
        "{path} holds no statements: add a CREATE OR REPLACE FUNCTION or PROCEDURE statement, \
         or delete the file"
    )]
    EmptyFile { path: String },

    /// PostgreSQL's parser refused the file (or a PL/pgSQL body in it).
    #[error("{at}: {message}")]
    Syntax { at: SourceLocation, message: String },

    #[error("{at}: {statement} statement is not allowed in a procedure file: {advice}")]
    NotARoutine {
        at: SourceLocation,
        statement: String,
        /// What to do instead (`companion.rs` words it per statement).
        advice: String,
    },

    /// A GRANT, REVOKE, COMMENT or ALTER … OWNER TO next to the routines
    /// that cannot be accepted as it is (e.g. it names a routine the file
    /// does not create).
    #[error("{at}: {reason}")]
    Companion { at: SourceLocation, reason: String },

    /// Valid SQL that the loader cannot turn into a routine identity.
    #[error("{at}: {reason}")]
    Unsupported { at: SourceLocation, reason: String },

    #[error("{at}: {reason}")]
    InvalidSidecar { at: SourceLocation, reason: String },

    /// `pgrollout.toml` at the project root cannot be used as written.
    #[error("{at}: {reason}")]
    InvalidProjectFile { at: SourceLocation, reason: String },

    /// A pgTAP file named by a sidecar that cannot be run as it is.
    #[error("{at}: {reason}")]
    InvalidTestFile { at: SourceLocation, reason: String },

    #[error(
        "{identity} is defined twice, at {first} and at {second}: keep one definition \
         (overloads need different argument types)"
    )]
    DuplicateRoutine {
        identity: String,
        first: SourceLocation,
        second: SourceLocation,
    },

    #[error("no function or procedure named {name:?} in the project; {hint}")]
    UnknownProcedure { name: String, hint: String },

    /// A name defined by a file that could not be loaded.
    #[error(
        "{name} cannot be deployed until its file is fixed: {}",
        problems.join("; ")
    )]
    BlockedByFile { name: String, problems: Vec<String> },

    #[error("{name:?} is not a routine name: {reason}")]
    InvalidRoutineName { name: String, reason: String },
}
