//! The `[notifications]` table of the controller's config: named channels
//! (Slack incoming webhooks, generic JSON webhooks) and which environments
//! notify which channels.
//!
//! ```toml
//! [notifications]
//! timeout = "5s"     # per attempt
//! attempts = 3       # then the failure is audited as notification.failed
//! backoff = "1s"     # before the second attempt; doubles each time, and
//!                    # never shorter than a 429/503's Retry-After (≤ 5 min)
//!
//! [notifications.channels.dev-slack]
//! kind = "slack"                        # or "webhook"; others are refused
//! url_env = "PGROLLOUT_SLACK_DEV_URL"   # a webhook URL is a secret
//!
//! [notifications.channels.ops-hook]
//! kind = "webhook"
//! url = "https://events.internal/pgrollout"
//! signing_secret_env = "PGROLLOUT_HOOK_KEY" # X-Pgrollout-Signature: t=…,v1=HMAC-SHA256("t.body")
//!
//! [notifications.routes]
//! dev = ["dev-slack"]
//! ```
//!
//! A Slack channel posts to the channel the webhook was created for; an
//! environment's `notification_channel` (SEED.md's `#dev-deploys`) is sent as
//! the payload's `channel`, which webhooks that allow overrides honour.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Channel name to where and how it posts.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Environment name to the channels its events go to.
    pub routes: BTreeMap<String, Vec<String>>,
    /// How long one delivery attempt may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per channel and event before the failure is audited.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each further one.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Events waiting for delivery; past this, new events are dropped (and
    /// audited) rather than held in memory or allowed to slow a rollout.
    pub queue: usize,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            channels: BTreeMap::new(),
            routes: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_secs(1),
            queue: 1024,
        }
    }
}

/// Parsed by hand: serde's own enum error does not list the allowed kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ChannelKind {
    /// A Slack incoming webhook: `{"text": …, "blocks": […]}`.
    Slack,
    /// Any HTTP endpoint: the event as a flat JSON object.
    Webhook,
}

impl TryFrom<String> for ChannelKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        ChannelKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| {
                let allowed: Vec<String> = ChannelKind::ALL
                    .iter()
                    .map(|kind| format!("\"{}\"", kind.as_str()))
                    .collect();
                format!(
                    "unknown channel kind \"{value}\": use one of {}",
                    allowed.join(", ")
                )
            })
    }
}

impl ChannelKind {
    const ALL: [ChannelKind; 2] = [ChannelKind::Slack, ChannelKind::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
        }
    }
}

/// One channel. Exactly one of `url`, `url_env` and `url_file` is set; the
/// last two keep a secret URL (Slack's carries its token) out of the config
/// file, and it is never logged or audited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub kind: ChannelKind,
    /// The URL itself: for endpoints whose URL is not a secret.
    pub url: Option<String>,
    /// An environment variable of the controller holding the URL.
    pub url_env: Option<String>,
    /// A file holding the URL (surrounding whitespace ignored); re-read at
    /// every delivery, so a rotated URL needs no restart.
    pub url_file: Option<PathBuf>,
    /// Webhooks only: an environment variable holding the key that signs
    /// each body (`X-Pgrollout-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of
    /// "<t>.<body>">`), so the receiver can tell it came from here.
    pub signing_secret_env: Option<String>,
    /// Webhooks only: the same key from a file (trimmed), re-read at every
    /// delivery.
    pub signing_secret_file: Option<PathBuf>,
}

impl NotificationsConfig {
    /// Checks names, references and bounds; `environments` are the names the
    /// controller's config defines.
    pub fn validate<'a>(
        &self,
        environments: impl IntoIterator<Item = &'a String>,
    ) -> anyhow::Result<()> {
        let environments: Vec<&String> = environments.into_iter().collect();
        for (name, channel) in &self.channels {
            if !pgrollout_shared::identity::is_valid_segment(name) {
                anyhow::bail!("invalid controller config: notifications.channels.{name}: names use a-z, 0-9, '-', '_', '.'");
            }
            let sources = [
                channel.url.is_some(),
                channel.url_env.is_some(),
                channel.url_file.is_some(),
            ];
            if sources.iter().filter(|set| **set).count() != 1 {
                anyhow::bail!(
                    "invalid controller config: notifications.channels.{name}: set exactly one of url, url_env, url_file"
                );
            }
            let signed =
                channel.signing_secret_env.is_some() || channel.signing_secret_file.is_some();
            if channel.signing_secret_env.is_some() && channel.signing_secret_file.is_some() {
                anyhow::bail!(
                    "invalid controller config: notifications.channels.{name}: set at most one of signing_secret_env, signing_secret_file"
                );
            }
            if signed && channel.kind != ChannelKind::Webhook {
                anyhow::bail!(
                    "invalid controller config: notifications.channels.{name}: only webhook channels are signed (Slack checks its own URLs)"
                );
            }
            if let Some(url) = &channel.url {
                super::secret::parse_url(url).map_err(|problem| {
                    anyhow::anyhow!(
                        "invalid controller config: notifications.channels.{name}.url: {problem}"
                    )
                })?;
            }
        }
        for (environment, channels) in &self.routes {
            if !environments.contains(&environment) {
                anyhow::bail!(
                    "invalid controller config: notifications.routes.{environment}: no such environment"
                );
            }
            for channel in channels {
                if !self.channels.contains_key(channel) {
                    anyhow::bail!(
                        "invalid controller config: notifications.routes.{environment}: no channel {channel:?} in [notifications.channels]"
                    );
                }
            }
        }
        if !(1..=10).contains(&self.attempts) {
            anyhow::bail!("invalid controller config: notifications.attempts: 1 to 10");
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(60) {
            anyhow::bail!("invalid controller config: notifications.timeout: 100ms to 60s");
        }
        if self.backoff > Duration::from_secs(60) {
            anyhow::bail!("invalid controller config: notifications.backoff: at most 60s");
        }
        if self.queue == 0 {
            anyhow::bail!("invalid controller config: notifications.queue: at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<NotificationsConfig> {
        let config: NotificationsConfig = toml::from_str(text)?;
        let environments = ["dev".to_owned(), "prod".to_owned()];
        config.validate(&environments)?;
        Ok(config)
    }

    #[test]
    fn channels_and_routes_parse_with_defaults() {
        let config = parse(
            "[channels.dev-slack]\nkind = \"slack\"\nurl_env = \"X\"\n\
             [channels.ops-hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9999/hook\"\n\
             [routes]\ndev = [\"dev-slack\"]\nprod = [\"dev-slack\", \"ops-hook\"]\n",
        )
        .expect("valid");
        assert_eq!(config.attempts, 3);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.channels["ops-hook"].kind, ChannelKind::Webhook);
        assert_eq!(config.routes["prod"], ["dev-slack", "ops-hook"]);
    }

    #[test]
    fn mistakes_are_refused_by_name() {
        for (text, expected) in [
            ("[channels.a]\nkind = \"slack\"\n", "exactly one of url"),
            (
                "[channels.a]\nkind = \"slack\"\nurl = \"x\"\nurl_env = \"Y\"\n",
                "exactly one of url",
            ),
            (
                "[channels.a]\nkind = \"webhook\"\nurl = \"ftp://h/x\"\n",
                "http",
            ),
            ("[routes]\nqa = []\n", "routes.qa: no such environment"),
            ("[routes]\ndev = [\"nope\"]\n", "no channel \"nope\""),
            ("attempts = 0\n", "attempts"),
            (
                "[channels.a]\nkind = \"email\"\nurl = \"http://h\"\n",
                "email",
            ),
            (
                "[channels.a]\nkind = \"slack\"\nurll = \"http://h\"\n",
                "urll",
            ),
        ] {
            let error = format!("{:#}", parse(text).expect_err(text));
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
