//! The controller's configuration. Environments map to zones and targets;
//! database hosts and credentials are deliberately absent: they live in each
//! zone's agent config and never reach the controller.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Environment overrides: `PGROLLOUT_CONTROLLER__LISTEN__OPERATORS=...`.
pub const ENV_PREFIX: &str = "PGROLLOUT_CONTROLLER";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    pub listen: Listen,
    pub store: StoreConfig,
    #[serde(default)]
    pub deployment: Deployment,
    /// Environment name (dev, qa, prod, …) to its settings.
    pub environments: BTreeMap<String, Environment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where operators' CLIs connect.
    pub operators: SocketAddr,
    /// Where agents dial in.
    pub agents: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The embedded SQLite store, created on first start.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deployment {
    /// A job's deadline: past it the agent stops and rolls back.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// How long an offered job may wait for the agent's Accept.
    #[serde(with = "humantime_serde")]
    pub accept_timeout: Duration,
    /// Longest the controller waits for an agent of the zone to connect
    /// before refusing a rollout (the CLI may ask for less).
    #[serde(with = "humantime_serde")]
    pub max_agent_wait: Duration,
    /// Interval of the controller's heartbeats to agents.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            job_timeout: Duration::from_secs(600),
            accept_timeout: Duration::from_secs(10),
            max_agent_wait: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The network zone whose agents serve this environment; defaults to the
    /// environment's own name.
    pub zone: Option<String>,
    /// The target name, within the zone's agents, that this environment
    /// deploys to.
    #[serde(default = "default_target")]
    pub target: String,
}

fn default_target() -> String {
    "main".to_owned()
}

impl ControllerConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: ControllerConfig = pgrollout_shared::config_loader::load(path, ENV_PREFIX)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.environments.is_empty() {
            anyhow::bail!("invalid controller config: environments: at least one [environments.<name>] is needed");
        }
        for (name, environment) in &self.environments {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                anyhow::bail!("invalid controller config: environments.{name}: names use letters, digits, - and _");
            }
            if environment.target.trim().is_empty() {
                anyhow::bail!(
                    "invalid controller config: environments.{name}.target: must not be empty"
                );
            }
        }
        if self.deployment.job_timeout < Duration::from_secs(1) {
            anyhow::bail!("invalid controller config: deployment.job_timeout: must be at least 1s");
        }
        Ok(())
    }

    /// The zone an environment lives in.
    pub fn zone_of(&self, environment: &str) -> Option<String> {
        self.environments
            .get(environment)
            .map(|e| e.zone.clone().unwrap_or_else(|| environment.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/controller.toml");
        let config = ControllerConfig::load(&path).expect("example config is valid");
        assert_eq!(config.zone_of("prod").as_deref(), Some("prod"));
        assert_eq!(config.environments["dev"].target, "main");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[listen]\noperators='127.0.0.1:1'\nagents='127.0.0.1:2'\n[store]\npath='x'\n[environments.dev]\nzonee='dev'\n",
        )
        .expect("write");
        let error = format!("{:#}", ControllerConfig::load(&path).expect_err("typo"));
        assert!(error.contains("zonee"), "{error}");
    }
}
