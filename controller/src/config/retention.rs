//! The `[store.retention]` table (issue 17): how long the controller keeps
//! each finished rollout's step events and job results. Without the table
//! nothing is pruned.
//!
//! ```toml
//! [store.retention]
//! keep = "90d"     # rollouts that finished longer ago lose events and results
//! every = "1h"     # how often the controller looks (default 1h)
//! ```
//!
//! Never pruned: the rollout's own row (who, what, where, state, exit code,
//! times, gate verdicts), its plan, the audit log (whose chain
//! `pgrollout audit verify` checks whole), the index of routine versions the
//! rollback reads (`routine_versions`), and the results the promotion and
//! tests-passed gates read (each plan's newest successful deploy in each
//! environment, and the newest whose smoke tests ran to the end).

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events and results of rollouts that finished longer ago than this are
    /// pruned.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// How often the controller prunes.
    #[serde(with = "humantime_serde", default = "default_every")]
    pub every: Duration,
}

fn default_every() -> Duration {
    Duration::from_secs(3600)
}

impl RetentionConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.keep.is_zero() {
            anyhow::bail!(
                "invalid controller config: store.retention.keep must be longer than 0 (e.g. \"90d\"); \
                 remove [store.retention] to keep everything"
            );
        }
        if self.every.is_zero() {
            anyhow::bail!(
                "invalid controller config: store.retention.every must be longer than 0 (e.g. \"1h\")"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_is_required_and_every_defaults_to_an_hour() {
        let config: RetentionConfig = toml::from_str("keep = \"90d\"").expect("parses");
        assert_eq!(config.keep, Duration::from_secs(90 * 86_400));
        assert_eq!(config.every, Duration::from_secs(3600));
        assert!(config.validate().is_ok());
        assert!(toml::from_str::<RetentionConfig>("every = \"1h\"").is_err());
        assert!(toml::from_str::<RetentionConfig>("keep = \"1d\"\nkept = \"2d\"").is_err());
        let zero: RetentionConfig = toml::from_str("keep = \"0s\"").expect("parses");
        assert!(zero
            .validate()
            .expect_err("0s refused")
            .to_string()
            .contains("store.retention.keep"));
    }
}
