//! Where a channel's secrets come from, and a type that keeps its URL out
//! of logs. A Slack incoming-webhook URL is a bearer credential: whoever has
//! it can post to the channel; a webhook's signing key and an email
//! channel's SMTP password are secrets too. Each is read from the
//! environment or a file, and neither it nor any error that could quote it
//! is ever logged or audited.

use std::fmt;

pub use crate::config::notifications::parse_url;
use crate::config::notifications::ChannelConfig;

/// A channel's URL. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ChannelUrl(reqwest::Url);

impl ChannelUrl {
    pub fn as_url(&self) -> &reqwest::Url {
        &self.0
    }
}

impl fmt::Debug for ChannelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelUrl(<redacted>)")
    }
}

/// Why a channel's URL could not be had. The messages name where the URL
/// was looked for, never its value.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("environment variable {variable} is not set or not UTF-8")]
    MissingVariable { variable: String },
    #[error("cannot read {field} {path}")]
    Unreadable {
        field: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the URL from {source_name} is not usable: {problem}")]
    Invalid {
        source_name: String,
        problem: &'static str,
    },
}

/// Reads the channel's URL from wherever its config says. Called at start
/// (so a missing secret fails loudly) and at every delivery (so a rotated
/// file is picked up).
pub fn resolve(channel: &ChannelConfig) -> Result<ChannelUrl, UrlError> {
    let (text, source_name) = if let Some(url) = &channel.url {
        (url.clone(), "url".to_owned())
    } else if let Some(variable) = &channel.url_env {
        let value = std::env::var(variable).map_err(|_| UrlError::MissingVariable {
            variable: variable.clone(),
        })?;
        (value, format!("url_env {variable}"))
    } else if let Some(path) = &channel.url_file {
        let value = std::fs::read_to_string(path).map_err(|source| UrlError::Unreadable {
            field: "url_file",
            path: path.display().to_string(),
            source,
        })?;
        (value, format!("url_file {}", path.display()))
    } else {
        return Err(UrlError::Invalid {
            source_name: "the channel".to_owned(),
            problem: "no url, url_env or url_file is set",
        });
    };
    parse_url(text.trim())
        .map(ChannelUrl)
        .map_err(|problem| UrlError::Invalid {
            source_name,
            problem,
        })
}

/// The key a webhook channel signs its bodies with, if it has one; read at
/// every delivery so a rotated key needs no restart. Never logged.
pub fn signing_key(channel: &ChannelConfig) -> Result<Option<Vec<u8>>, UrlError> {
    let key = read_secret(
        &channel.signing_secret_env,
        &channel.signing_secret_file,
        "signing_secret_file",
    )?;
    Ok(key.map(String::into_bytes))
}

/// An email channel's SMTP password, if it logs in; read at every delivery
/// like the signing key. Never logged.
pub fn smtp_password(channel: &ChannelConfig) -> Result<Option<String>, UrlError> {
    read_secret(
        &channel.smtp_password_env,
        &channel.smtp_password_file,
        "smtp_password_file",
    )
}

/// A secret from the variable or else the file (trimmed), `None` if
/// neither is configured.
fn read_secret(
    variable: &Option<String>,
    file: &Option<std::path::PathBuf>,
    file_field: &'static str,
) -> Result<Option<String>, UrlError> {
    if let Some(variable) = variable {
        let value = std::env::var(variable).map_err(|_| UrlError::MissingVariable {
            variable: variable.clone(),
        })?;
        return Ok(Some(value));
    }
    if let Some(path) = file {
        let value = std::fs::read_to_string(path).map_err(|source| UrlError::Unreadable {
            field: file_field,
            path: path.display().to_string(),
            source,
        })?;
        return Ok(Some(value.trim().to_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notifications::ChannelKind;

    fn channel() -> ChannelConfig {
        ChannelConfig {
            kind: ChannelKind::Slack,
            ..Default::default()
        }
    }

    #[test]
    fn a_url_from_a_file_is_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("slack.url");
        std::fs::write(&path, "https://hooks.example/services/T0/B0/SECRET\n").expect("write");
        let url = resolve(&ChannelConfig {
            url_file: Some(path),
            ..channel()
        })
        .expect("resolves");
        assert_eq!(url.as_url().path(), "/services/T0/B0/SECRET");
        assert!(!format!("{url:?}").contains("SECRET"));
    }

    #[test]
    fn a_missing_variable_or_a_bad_url_says_where_without_the_value() {
        let error = resolve(&ChannelConfig {
            url_env: Some("PGROLLOUT_TEST_NO_SUCH_VARIABLE_7f3a".into()),
            ..channel()
        })
        .expect_err("unset");
        assert_eq!(
            error.to_string(),
            "environment variable PGROLLOUT_TEST_NO_SUCH_VARIABLE_7f3a is not set or not UTF-8"
        );
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bad.url");
        std::fs::write(&path, "hooks.example/SECRET").expect("write");
        let error = resolve(&ChannelConfig {
            url_file: Some(path),
            ..channel()
        })
        .expect_err("relative");
        assert!(!error.to_string().contains("SECRET"), "{error}");
        assert!(error.to_string().contains("not an absolute URL"), "{error}");
    }
}
