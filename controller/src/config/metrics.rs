//! The `[metrics]` table: where the Prometheus endpoint listens. Without the
//! table there is no endpoint.
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9464"
//! ```
//!
//! The endpoint is plain HTTP without authentication. What it shows is not
//! secret but is an inventory (procedure names, environments, zones, how
//! often things fail), so it stays on loopback unless the operator says
//! otherwise with `allow_non_loopback = true` — meant for a host firewall or
//! a TLS-terminating proxy in front of it.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `GET /metrics` is served here.
    pub listen: SocketAddr,
    /// Accept a non-loopback `listen` address (see above).
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl MetricsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            anyhow::bail!(
                "invalid controller config: metrics.listen: {} is not a loopback address; the endpoint is \
                 unauthenticated plain HTTP, so either listen on 127.0.0.1 and scrape through a proxy, or set \
                 metrics.allow_non_loopback = true behind a firewall",
                self.listen
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_address_needs_the_operator_to_say_so() {
        let parse = |text: &str| -> anyhow::Result<MetricsConfig> {
            let config: MetricsConfig = toml::from_str(text)?;
            config.validate()?;
            Ok(config)
        };
        assert!(parse("listen = \"127.0.0.1:9464\"").is_ok());
        let error = parse("listen = \"0.0.0.0:9464\"").expect_err("refused");
        assert!(error.to_string().contains("allow_non_loopback"), "{error}");
        assert!(parse("listen = \"0.0.0.0:9464\"\nallow_non_loopback = true").is_ok());
    }
}
