//! The agent's configuration: where the controller is, which zone it serves,
//! the zone's databases and how to find their passwords on this machine.
//!
//! Passwords are never in this file: only where to read them (an environment
//! variable, a file, or a pgpass file). They are never sent by the controller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod controllers;

pub use controllers::ControllerAddresses;

/// Environment overrides use this prefix: `PGROLLOUT_AGENT__BACKUP_DIR=...`.
pub const ENV_PREFIX: &str = "PGROLLOUT_AGENT";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's name, unique within its zone.
    pub name: String,
    /// The zone (network segment) this agent serves, e.g. `prod`.
    pub zone: String,
    /// The controller's agent endpoint, e.g. `https://controller.internal:7411`,
    /// or a list of them (issue 18): the agent holds one stream to one and
    /// moves to the next when it drops (`config/controllers.rs`).
    /// `http://` only against `--dev-plaintext` controllers.
    pub controller: ControllerAddresses,
    /// This agent's certificate (`pgrollout ca issue agent`), for `https://`.
    pub tls: Option<AgentTls>,
    /// Where backups of replaced routines are written, one file per job.
    pub backup_dir: PathBuf,
    /// Where the agent keeps its journal (jobs begun, results not yet
    /// acknowledged), so they survive a restart; defaults to `backup_dir`.
    /// Must be on durable storage and private to this agent.
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The databases of this zone that the agent may change.
    pub targets: Vec<TargetConfig>,
    /// Span export: a zone collector, or the relay through the controller.
    #[serde(default)]
    pub telemetry: pgrollout_shared::telemetry::TelemetryConfig,
    /// `[log] format = "text" | "json"`.
    #[serde(default)]
    pub log: pgrollout_shared::log_format::LogConfig,
    /// `/healthz`, `/readyz` and `/metrics` for probes and scrapes (`health.rs`); none without it.
    pub health: Option<HealthConfig>,
    /// `[approvals]` (issue 19): the signatures a changing job needs. Without
    /// it the agent runs what its controller offers, as before.
    pub approvals: Option<pgrollout_shared::signing::policy::ApprovalsConfig>,
    /// `approvals` with its CA file read, set by `load`.
    #[serde(skip)]
    pub approval_policy: Option<pgrollout_shared::signing::policy::ApprovalPolicy>,
}

/// The files of the agent's mutual-TLS identity. Read on every connection,
/// so renewed files are used without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTls {
    /// The CA that issued the controller's certificate.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to a target database.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Waiting for any lock, including the per-target deploy lock.
    #[serde(with = "humantime_serde")]
    pub lock: Duration,
    /// Any one statement other than a smoke call (those have their own bound).
    #[serde(with = "humantime_serde")]
    pub statement: Duration,
    /// Between heartbeats to the controller.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Longest wait between reconnect attempts (backoff doubles from 1 s).
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            lock: Duration::from_secs(10),
            statement: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The name environments refer to, e.g. `main`.
    pub name: String,
    /// Issue 24: labels a fleet environment's selector matches, e.g.
    /// `labels = { tier = "prod" }`; announced to the controller.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// Read the password from this environment variable.
    pub password_env: Option<String>,
    /// Read the password from this file (first line, trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Look the password up in this pgpass-format file.
    pub passfile: Option<PathBuf>,
    /// Schema of the ledger table in the target database.
    #[serde(default = "default_ledger_schema")]
    pub ledger_schema: String,
    /// How many connections the post-commit smoke test may spread its calls
    /// over (each its own session, opened while the deploy's transaction
    /// runs). A deploy with few smoke calls uses one.
    #[serde(default = "default_post_commit_connections")]
    pub post_commit_connections: usize,
    /// Whether the connection is encrypted and the server's certificate checked. Unset: `PGSSLMODE`, else
    /// libpq's default `prefer`.
    #[serde(default = "sslmode_from_env")]
    pub sslmode: SslMode,
    /// PEM file of the CA certificate(s) the server's certificate must chain to; required by, and only used
    /// with, `verify-full`. Read on every connect, so a replaced file is used without a restart.
    pub sslrootcert: Option<PathBuf>,
}

/// TLS to a target database, with libpq's names, meanings and default for the modes.
///
/// Parsed from a string by hand: the config crate's own enum error does not list the allowed values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SslMode {
    /// Plaintext.
    Disable,
    /// libpq's default: encrypted when the server offers TLS, else plaintext; the certificate not checked.
    /// Over a Unix socket, plaintext.
    #[default]
    Prefer,
    /// Encrypted, the server's certificate not checked: protects against eavesdropping only.
    Require,
    /// Encrypted; the server's certificate must chain to `sslrootcert` (its host name is not checked).
    VerifyCa,
    /// Encrypted; the server's certificate must chain to `sslrootcert` and name `host`.
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against `sslrootcert`.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl TryFrom<String> for SslMode {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == value)
            .ok_or_else(|| {
                let allowed: Vec<String> = SslMode::ALL
                    .iter()
                    .map(|mode| format!("\"{}\"", mode.as_str()))
                    .collect();
                format!(
                    "unknown sslmode \"{value}\": use one of {}",
                    allowed.join(", ")
                )
            })
    }
}

/// The TLS keys of one target: the key at fault and why.
fn validate_tls(target: &TargetConfig) -> Result<(), (&'static str, &'static str)> {
    match (target.sslmode.verifies(), &target.sslrootcert) {
        (true, None) => {
            return Err((
                "sslrootcert",
                "required with sslmode = \"verify-ca\" or \"verify-full\": the PEM file of the CA that signs the \
                 server's certificate",
            ))
        }
        (true, Some(path)) if path.as_os_str().is_empty() => {
            return Err(("sslrootcert", "must not be empty"))
        }
        // A CA file beside a mode that ignores it would suggest a check that never happens.
        (false, Some(_)) => {
            return Err((
                "sslrootcert",
                "only used with sslmode = \"verify-ca\" or \"verify-full\": set one of them, or remove sslrootcert",
            ))
        }
        _ => {}
    }
    // tokio-postgres takes a host starting with '/' as a Unix socket directory, where TLS does not apply
    // (`prefer` then means plaintext, as in libpq).
    let needs_tls = !matches!(target.sslmode, SslMode::Disable | SslMode::Prefer);
    if needs_tls && target.host.starts_with('/') {
        return Err((
            "sslmode",
            "TLS needs a TCP host, and host is a Unix socket directory: use sslmode = \"disable\" or \"prefer\"",
        ));
    }
    Ok(())
}

/// libpq's `PGSSLMODE` for a target without `sslmode`; an unknown value is
/// reported by `validate` (`pgsslmode_problem`), not silently replaced.
fn sslmode_from_env() -> SslMode {
    std::env::var("PGSSLMODE")
        .ok()
        .and_then(|value| SslMode::try_from(value).ok())
        .unwrap_or_default()
}

/// Why `PGSSLMODE`, when set, is not a mode.
fn pgsslmode_problem() -> Option<String> {
    let value = std::env::var("PGSSLMODE").ok()?;
    SslMode::try_from(value).err()
}

fn default_port() -> u16 {
    5432
}

/// Two sessions halve a large batch's post-commit check on a server with a
/// spare core, for one extra connection held a few milliseconds.
fn default_post_commit_connections() -> usize {
    2
}

/// The most `post_commit_connections` may ask for.
pub const MAX_POST_COMMIT_CONNECTIONS: usize = 8;

fn default_ledger_schema() -> String {
    "pgrollout".to_owned()
}

/// A configuration that loaded but cannot work, with the key to fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent config: {key}: {reason}")]
pub struct InvalidConfig {
    pub key: String,
    pub reason: String,
}

impl AgentConfig {
    /// The journal file of this agent.
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir
            .as_ref()
            .unwrap_or(&self.backup_dir)
            .join("pgrollout-agent.journal")
    }

    /// Loads the file with environment overrides, then validates it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: AgentConfig = pgrollout_shared::config_loader::load(path, ENV_PREFIX)?;
        config.validate()?;
        if let Some(approvals) = config.approvals.clone() {
            config.approval_policy = Some(pgrollout_shared::signing::policy::ApprovalPolicy::load(
                approvals,
            )?);
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        let invalid = |key: &str, reason: &str| InvalidConfig {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if self.zone.trim().is_empty() {
            return Err(invalid("zone", "must not be empty"));
        }
        self.controller
            .validate(self.tls.is_some())
            .map_err(|(key, reason)| invalid(&key, &reason))?;
        if let Some(health) = &self.health {
            health
                .validate()
                .map_err(|reason| invalid("health.listen", &reason))?;
        }
        if let Some(problem) = pgsslmode_problem() {
            return Err(invalid("PGSSLMODE (environment)", &problem));
        }
        if self.targets.is_empty() {
            return Err(invalid(
                "targets",
                "at least one [[targets]] entry is needed",
            ));
        }
        for (index, target) in self.targets.iter().enumerate() {
            let key = |field: &str| format!("targets[{index}].{field}");
            if target.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if self.targets[..index].iter().any(|t| t.name == target.name) {
                return Err(invalid(&key("name"), "duplicate target name"));
            }
            let sources = [
                target.password_env.is_some(),
                target.password_file.is_some(),
                target.passfile.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() > 1 {
                return Err(invalid(
                    &key("password_env"),
                    "set at most one of password_env, password_file, passfile",
                ));
            }
            if target.ledger_schema.is_empty() || target.ledger_schema.len() > 63 {
                return Err(invalid(&key("ledger_schema"), "must be 1 to 63 bytes"));
            }
            if !(1..=MAX_POST_COMMIT_CONNECTIONS).contains(&target.post_commit_connections) {
                return Err(invalid(
                    &key("post_commit_connections"),
                    &format!("must be 1 to {MAX_POST_COMMIT_CONNECTIONS}"),
                ));
            }
            validate_tls(target).map_err(|(field, reason)| invalid(&key(field), reason))?;
        }
        Ok(())
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// The `[health]` table: where `health.rs` serves `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `/healthz`, `/readyz` and `/metrics` are served here.
    pub listen: SocketAddr,
    /// Accept a non-loopback `listen` address: the endpoint is
    /// unauthenticated plain HTTP, so only behind a firewall.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(format!(
                "{} is not a loopback address; the health endpoint is unauthenticated plain HTTP, so either \
                 listen on 127.0.0.1 or set health.allow_non_loopback = true behind a firewall",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    const VALID: &str = r#"
        name = "dev-1"
        zone = "dev"
        controller = "http://127.0.0.1:7411"
        backup_dir = "/tmp/backups"
        [timeouts]
        lock = "3s"
        [[targets]]
        name = "main"
        host = "127.0.0.1"
        dbname = "perseus_dev"
        user = "deployer"
        password_env = "PERSEUS_DEV_PASSWORD"
    "#;

    #[test]
    fn loads_a_valid_file_with_defaults() {
        let file = write(VALID);
        let config = AgentConfig::load(file.path()).expect("valid");
        assert_eq!(config.timeouts.lock, Duration::from_secs(3));
        assert_eq!(config.timeouts.statement, Duration::from_secs(60));
        assert_eq!(config.targets[0].port, 5432);
        assert_eq!(config.targets[0].ledger_schema, "pgrollout");
        assert_eq!(config.targets[0].post_commit_connections, 2);
        assert_eq!(
            config.targets[0].sslmode,
            SslMode::Prefer,
            "libpq's default"
        );
        assert_eq!(config.targets[0].sslrootcert, None);
    }

    #[test]
    fn an_approvals_policy_whose_ca_cannot_be_read_stops_the_agent() {
        assert!(AgentConfig::load(write(VALID).path())
            .expect("valid")
            .approval_policy
            .is_none());
        let file = write(&format!(
            "{VALID}\n[approvals]\noperator_ca = \"/nonexistent/operators-ca.pem\"\nenvironment = \"prod\"\napprovers = [\"bob\"]\n"
        ));
        let error = AgentConfig::load(file.path())
            .expect_err("no CA file")
            .to_string();
        assert!(error.contains("operator_ca"), "{error}");
        let file = write(&format!(
            "{VALID}\n[approvals]\noperator_ca = \"/x.pem\"\nenvironment = \"prod\"\napprovers = [\"bob\"]\nrequired = 2\n"
        ));
        let error = AgentConfig::load(file.path())
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("required"), "{error}");
    }

    fn with_target_keys(keys: &str) -> Result<AgentConfig, String> {
        let file = write(&format!("{VALID}\n{keys}\n"));
        AgentConfig::load(file.path()).map_err(|error| error.to_string())
    }

    #[test]
    fn verify_full_with_a_ca_file_and_require_without_one_are_valid() {
        let config = with_target_keys(
            "sslmode = \"verify-full\"\nsslrootcert = \"/etc/pgrollout/db-ca.pem\"",
        )
        .expect("verify-full with a CA file");
        assert_eq!(config.targets[0].sslmode, SslMode::VerifyFull);
        assert_eq!(
            config.targets[0].sslrootcert.as_deref(),
            Some(Path::new("/etc/pgrollout/db-ca.pem"))
        );
        let config = with_target_keys("sslmode = \"require\"").expect("require");
        assert_eq!(config.targets[0].sslmode, SslMode::Require);
    }

    #[test]
    fn an_unknown_sslmode_is_refused_with_the_allowed_values() {
        let error = with_target_keys("sslmode = \"allow\"").expect_err("unknown mode");
        assert!(error.contains("\"allow\""), "{error}");
        for allowed in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert!(error.contains(allowed), "{error}");
        }
    }

    #[test]
    fn verify_full_without_a_ca_file_names_the_key() {
        let error = with_target_keys("sslmode = \"verify-full\"").expect_err("no CA file");
        assert!(error.contains("targets[0].sslrootcert"), "{error}");
        assert!(error.contains("required"), "{error}");
    }

    #[test]
    fn a_ca_file_without_verify_full_is_refused() {
        for mode in ["disable", "prefer", "require"] {
            let error = with_target_keys(&format!(
                "sslmode = \"{mode}\"\nsslrootcert = \"/etc/pgrollout/db-ca.pem\""
            ))
            .expect_err("CA file that would be ignored");
            assert!(error.contains("targets[0].sslrootcert"), "{error}");
            assert!(error.contains("only used with"), "{error}");
        }
    }

    #[test]
    fn tls_to_a_unix_socket_is_refused() {
        let text = VALID.replace("host = \"127.0.0.1\"", "host = \"/var/run/postgresql\"");
        let file = write(&format!("{text}\nsslmode = \"require\"\n"));
        let error = AgentConfig::load(file.path())
            .expect_err("TLS over a Unix socket")
            .to_string();
        assert!(error.contains("targets[0].sslmode"), "{error}");
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.toml");
        let config = AgentConfig::load(&path).expect("example config is valid");
        assert_eq!(config.zone, "prod");
        // The example controller requires mutual TLS, so the example agent
        // must speak it: https and a [tls] identity.
        assert!(
            config.controller.at(0).starts_with("https://"),
            "{}",
            config.controller
        );
        let tls = config
            .tls
            .as_ref()
            .expect("the example agent has a [tls] table");
        assert!(tls.cert.ends_with("agent-prod-prod-1.pem"), "{tls:?}");
        assert_eq!(
            config.targets[0].password_env.as_deref(),
            Some("PERSEUS_PROD_PASSWORD")
        );
        assert_eq!(config.targets[0].sslmode, SslMode::VerifyFull);
        assert!(config.telemetry.relay && config.telemetry.otlp_endpoint.is_none());
    }

    fn with_controller(line: &str) -> Result<AgentConfig, String> {
        let text = VALID.replace("controller = \"http://127.0.0.1:7411\"", line);
        AgentConfig::load(write(&text).path()).map_err(|error| format!("{error:#}"))
    }

    #[test]
    fn the_controller_may_be_one_address_or_a_list() {
        let config =
            with_controller("controller = [\"http://127.0.0.1:7411\", \"http://127.0.0.1:7412\"]")
                .expect("a list");
        assert_eq!(config.controller.len(), 2);
        assert_eq!(config.controller.at(1), "http://127.0.0.1:7412");
        let config = with_controller("controller = \"http://127.0.0.1:7411\"").expect("one");
        assert_eq!(config.controller.len(), 1);
        let error = with_controller("controller = []").expect_err("empty");
        assert!(error.contains("controller: lists no address"), "{error}");
        let error = with_controller("controller = 7411").expect_err("a number");
        assert!(error.contains("a controller address"), "{error}");
        let error =
            with_controller("controller = [\"http://127.0.0.1:7411\", \"http://127.0.0.1:7411\"]")
                .expect_err("twice");
        assert!(error.contains("controller[1]"), "{error}");
    }

    #[test]
    fn a_typo_is_an_error_that_names_the_key() {
        let file = write(&VALID.replace("backup_dir", "backupdir"));
        let error = AgentConfig::load(file.path())
            .expect_err("typo")
            .to_string();
        assert!(error.contains("backupdir"), "{error}");
    }

    #[test]
    fn two_password_sources_are_refused() {
        let file = write(&format!("{VALID}\npassword_file = \"/etc/pw\"\n"));
        let error = AgentConfig::load(file.path())
            .expect_err("two sources")
            .to_string();
        assert!(error.contains("at most one"), "{error}");
    }

    #[test]
    fn post_commit_connections_must_be_one_to_eight() {
        for (value, ok) in [(0, false), (1, true), (8, true), (9, false)] {
            let file = write(&format!("{VALID}\npost_commit_connections = {value}\n"));
            match AgentConfig::load(file.path()) {
                Ok(config) => {
                    assert!(ok, "{value} accepted");
                    assert_eq!(config.targets[0].post_commit_connections, value);
                }
                Err(error) => {
                    assert!(!ok, "{value} refused: {error}");
                    let error = error.to_string();
                    assert!(
                        error.contains("targets[0].post_commit_connections")
                            && error.contains("must be 1 to 8"),
                        "{error}"
                    );
                }
            }
        }
    }
}
