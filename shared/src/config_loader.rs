//! Layered configuration: serde defaults, then the TOML file, then environment
//! overrides (`<PREFIX>__KEY__NESTED`), then the caller's `validate()`.
//!
//! Config structs use `#[serde(deny_unknown_fields)]`: in a deployment tool a
//! typo must fail loudly rather than silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("cannot read config file {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file parsed but a key is unknown, missing or of the wrong type.
    #[error("invalid config in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Loads `path` as TOML into `T`, with environment overrides under
/// `env_prefix` (e.g. `PGROLLOUT_AGENT` reads `PGROLLOUT_AGENT__BACKUP_DIR`).
pub fn load<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigError> {
    // Read the file ourselves so a missing file says so, instead of the config
    // crate's generic "not found" without the path.
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |error: config::ConfigError| ConfigError::Invalid {
        path: path.to_owned(),
        message: error.to_string(),
    };
    config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(env_prefix)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(invalid)?
        .try_deserialize()
        .map_err(invalid)
}
