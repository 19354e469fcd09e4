//! The schema a project's code is written for: `pgrollout.toml` at the
//! project root, and a sidecar's `[schema]` table for one file.
//!
//! ```toml
//! [schema]
//! name = "tap"                    # where unqualified CREATEs land
//! search_path = ["tap", "public"] # what bodies and smoke tests see
//! ```
//!
//! Without a declaration a project lives in `public` with the search path
//! `public`, stated explicitly in every plan: the target database's own
//! default search path never decides where code lands.

use std::path::Path;

use pgrollout_shared::routine::{MAX_IDENTIFIER_BYTES, MAX_SEARCH_PATH_SCHEMAS};
use serde::Deserialize;
use toml::Spanned;

use super::error::{ProjectError, SourceLocation};

/// The project file at the project root.
pub const PROJECT_FILE: &str = "pgrollout.toml";

/// The schema unqualified routines land in and the search path their
/// CREATEs and smoke tests run with. The path always starts with `schema`:
/// PostgreSQL creates an unqualified object in the first schema of the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaSettings {
    pub schema: String,
    pub search_path: Vec<String>,
}

impl Default for SchemaSettings {
    fn default() -> Self {
        SchemaSettings {
            schema: "public".to_owned(),
            search_path: vec!["public".to_owned()],
        }
    }
}

/// `pgrollout.toml` as written. Unknown keys are refused, as everywhere.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    schema: Option<SchemaTable>,
}

/// `[schema]`, in the project file or a sidecar.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaTable {
    name: Option<Spanned<String>>,
    search_path: Option<Spanned<Vec<String>>>,
}

/// Reads `pgrollout.toml` when the project has one; the defaults otherwise.
pub fn load_project_settings(root: &Path) -> Result<SchemaSettings, ProjectError> {
    let path = root.join(PROJECT_FILE);
    if !path.is_file() {
        return Ok(SchemaSettings::default());
    }
    let mut text =
        std::fs::read_to_string(&path).map_err(|source| ProjectError::ReadFile { path, source })?;
    super::files::skip_byte_order_mark(&mut text);
    let file: ProjectFile =
        toml::from_str(&text).map_err(|error| ProjectError::InvalidProjectFile {
            at: error.span().map_or_else(
                || SourceLocation::file(PROJECT_FILE),
                |span| SourceLocation::at_offset(PROJECT_FILE, &text, span.start),
            ),
            reason: error.message().trim_end().to_owned(),
        })?;
    match file.schema {
        Some(table) => table.resolve(PROJECT_FILE, &text, &SchemaSettings::default()),
        None => Ok(SchemaSettings::default()),
    }
}

impl SchemaTable {
    /// The settings this table declares, `inherited` filling what it leaves
    /// out: no key at all keeps `inherited`; only `name` searches that
    /// schema alone; only `search_path` creates in its first schema.
    pub fn resolve(
        &self,
        path: &str,
        text: &str,
        inherited: &SchemaSettings,
    ) -> Result<SchemaSettings, ProjectError> {
        let invalid = |span: std::ops::Range<usize>, reason: String| {
            let at = SourceLocation::at_offset(path, text, span.start);
            if path == PROJECT_FILE {
                ProjectError::InvalidProjectFile { at, reason }
            } else {
                ProjectError::InvalidSidecar { at, reason }
            }
        };
        if let Some(name) = &self.name {
            check_schema_name(name.get_ref()).map_err(|reason| invalid(name.span(), reason))?;
            let reserved = name.get_ref().starts_with("pg_") || name.get_ref() == "$user";
            if reserved {
                return Err(invalid(
                    name.span(),
                    format!(
                        "{:?} cannot hold a project's routines: name the schema they belong in",
                        name.get_ref()
                    ),
                ));
            }
        }
        if let Some(search_path) = &self.search_path {
            let schemas = search_path.get_ref();
            if schemas.is_empty() || schemas.len() > MAX_SEARCH_PATH_SCHEMAS {
                return Err(invalid(
                    search_path.span(),
                    format!("search_path lists 1 to {MAX_SEARCH_PATH_SCHEMAS} schemas"),
                ));
            }
            for schema in schemas {
                check_schema_name(schema).map_err(|reason| invalid(search_path.span(), reason))?;
            }
        }
        match (&self.name, &self.search_path) {
            (None, None) => Ok(inherited.clone()),
            (Some(name), None) => Ok(SchemaSettings {
                schema: name.get_ref().clone(),
                search_path: vec![name.get_ref().clone()],
            }),
            (None, Some(search_path)) => Ok(SchemaSettings {
                schema: search_path.get_ref()[0].clone(),
                search_path: search_path.get_ref().clone(),
            }),
            (Some(name), Some(search_path)) => {
                if search_path.get_ref()[0] != *name.get_ref() {
                    return Err(invalid(
                        search_path.span(),
                        format!(
                            "search_path must start with the schema {:?}: PostgreSQL creates an \
                             unqualified routine in the first schema of the path",
                            name.get_ref()
                        ),
                    ));
                }
                Ok(SchemaSettings {
                    schema: name.get_ref().clone(),
                    search_path: search_path.get_ref().clone(),
                })
            }
        }
    }
}

/// A schema name as PostgreSQL would keep it (case as written: these are
/// names, not SQL, so `Tap` means the schema `"Tap"`).
pub(super) fn check_schema_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a schema name must not be empty".to_owned());
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{name:?} is longer than {MAX_IDENTIFIER_BYTES} bytes, which PostgreSQL would truncate"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<SchemaSettings, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            schema: SchemaTable,
        }
        let wrapper: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        wrapper
            .schema
            .resolve("pgrollout.toml", text, &SchemaSettings::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_name_alone_is_searched_alone_and_a_path_alone_creates_in_its_first_schema() {
        assert_eq!(
            resolve("[schema]\nname = \"tap\"\n"),
            Ok(SchemaSettings {
                schema: "tap".into(),
                search_path: vec!["tap".into()]
            })
        );
        assert_eq!(
            resolve("[schema]\nsearch_path = [\"app\", \"public\"]\n"),
            Ok(SchemaSettings {
                schema: "app".into(),
                search_path: vec!["app".into(), "public".into()]
            })
        );
    }

    #[test]
    fn a_path_that_does_not_start_with_the_schema_is_refused_with_its_place() {
        let error = resolve("[schema]\nname = \"tap\"\nsearch_path = [\"public\", \"tap\"]\n")
            .expect_err("refused");
        assert!(
            error.starts_with("pgrollout.toml:3:")
                && error.contains("search_path must start with the schema \"tap\""),
            "{error}"
        );
        let error = resolve("[schema]\nname = \"pg_catalog\"\n").expect_err("refused");
        assert!(
            error.contains("cannot hold a project's routines"),
            "{error}"
        );
        let error = resolve("[schema]\nsearch_path = []\n").expect_err("refused");
        assert!(error.contains("1 to 32 schemas"), "{error}");
    }
}
