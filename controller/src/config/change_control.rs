//! `[change_control]`: where the `change_ticket` gate looks tickets up.
//! The type and its checks live here so the config stays a leaf; the
//! lookup itself is the gate's (`engine/gates/ticket.rs`).

use std::time::Duration;

use serde::Deserialize;

/// Where a ticket id goes in `ticket_url`.
pub const PLACEHOLDER: &str = "{ticket}";

/// `[change_control]` in the controller's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeControlConfig {
    /// Where a ticket is looked up, with `{ticket}` where its id goes, e.g.
    /// `https://jira.example/rest/api/2/issue/{ticket}`.
    pub ticket_url: String,
    /// How long the change-control system has to answer (connect included).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// An environment variable holding the whole `Authorization` header value
    /// (`Bearer …` or `Basic …`). It is a secret: read at each check, never
    /// logged or shown.
    pub authorization_env: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ChangeControlConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let key = |field: &str| format!("invalid controller config: change_control.{field}");
        if self.ticket_url.matches(PLACEHOLDER).count() != 1 {
            anyhow::bail!(
                "{}: must contain {PLACEHOLDER} exactly once, where the ticket id goes",
                key("ticket_url")
            );
        }
        let sample = self.ticket_url.replace(PLACEHOLDER, "pgrollout-ticket-id");
        let url = reqwest::Url::parse(&sample)
            .map_err(|_| anyhow::anyhow!("{}: not an absolute URL", key("ticket_url")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            anyhow::bail!(
                "{}: only http and https URLs with a host are supported",
                key("ticket_url")
            );
        }
        if url
            .host_str()
            .is_some_and(|h| h.contains("pgrollout-ticket-id"))
        {
            anyhow::bail!(
                "{}: {PLACEHOLDER} must not be part of the host: a ticket id never chooses where the controller connects",
                key("ticket_url")
            );
        }
        if !url.username().is_empty() || url.password().is_some() {
            anyhow::bail!(
                "{}: no credentials in the URL (it is shown in gate reasons); put the Authorization header value in \
                 the variable named by change_control.authorization_env",
                key("ticket_url")
            );
        }
        if self.timeout.is_zero() {
            anyhow::bail!("{}: must be more than 0s", key("timeout"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ticket_url: &str) -> ChangeControlConfig {
        ChangeControlConfig {
            ticket_url: ticket_url.into(),
            timeout: Duration::from_millis(500),
            authorization_env: None,
        }
    }

    #[test]
    fn the_url_template_is_checked_at_start() {
        assert!(sample("https://jira.example/rest/api/2/issue/{ticket}")
            .validate()
            .is_ok());
        for (bad, expected) in [
            ("https://jira.example/issue/", "exactly once"),
            (
                "https://{ticket}.example/issue",
                "must not be part of the host",
            ),
            (
                "https://user:pw@jira.example/{ticket}",
                "no credentials in the URL",
            ),
            ("ftp://jira.example/{ticket}", "only http and https"),
        ] {
            let error = sample(bad).validate().expect_err(bad).to_string();
            assert!(error.contains(expected), "{bad}: {error}");
            assert!(error.contains("change_control.ticket_url"), "{error}");
        }
    }
}
