//! The `[notifications]` table of the controller's config: named channels
//! (Slack incoming webhooks, generic JSON webhooks, email over SMTP) and
//! which environments notify which channels. Types and checks only; the
//! delivery is `crate::notify`'s.
//!
//! ```toml
//! [notifications]
//! timeout = "5s"     # per attempt
//! attempts = 3       # then the failure is audited as notification.failed
//! backoff = "1s"     # before the second attempt; doubles each time, and
//!                    # never shorter than a 429/503's Retry-After (≤ 5 min)
//!
//! [notifications.channels.dev-slack]
//! kind = "slack"                        # or "webhook", "email"; others are refused
//! url_env = "PGROLLOUT_SLACK_DEV_URL"   # a webhook URL is a secret
//!
//! [notifications.channels.ops-hook]
//! kind = "webhook"
//! url = "https://events.internal/pgrollout"
//! signing_secret_env = "PGROLLOUT_HOOK_KEY" # X-Pgrollout-Signature: t=…,v1=HMAC-SHA256("t.body")
//!
//! [notifications.channels.dba-mail]
//! kind = "email"
//! smtp_host = "smtp.example.com"
//! smtp_tls = "starttls"                 # default; "tls" = implicit TLS (465); "none" = local relay, no auth
//! smtp_username = "pgrollout"
//! smtp_password_env = "PGROLLOUT_SMTP_PASSWORD"   # or smtp_password_file
//! from = "pgrollout <pgrollout@example.com>"
//! to = ["dba@example.com"]
//!
//! [notifications.routes]
//! dev = ["dev-slack"]
//! prod = ["dev-slack", "dba-mail"]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ChannelKind {
    /// A Slack incoming webhook: `{"text": …, "blocks": […]}`. The default
    /// only for building configs in code: the TOML must name a kind.
    #[default]
    Slack,
    /// Any HTTP endpoint: the event as a flat JSON object.
    Webhook,
    /// Mail over SMTP: a plain-text message to `to`.
    Email,
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
    const ALL: [ChannelKind; 3] = [ChannelKind::Slack, ChannelKind::Webhook, ChannelKind::Email];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
        }
    }
}

/// How an email channel's connection to its SMTP server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (587).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS, 465).
    Tls,
    /// No TLS at all: only for a relay on the same host, and never with a
    /// password (it would cross the wire in clear).
    None,
}

impl SmtpTls {
    /// The port each mode is conventionally served on.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// One channel. Slack and webhook channels set exactly one of `url`,
/// `url_env` and `url_file`; the last two keep a secret URL (Slack's carries
/// its token) out of the config file, and it is never logged or audited.
/// Email channels set the `smtp_*`, `from` and `to` fields instead.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Email only: the SMTP server's host name (also the name its
    /// certificate must carry).
    pub smtp_host: Option<String>,
    /// Email only: default 587 (`starttls`), 465 (`tls`), 25 (`none`).
    pub smtp_port: Option<u16>,
    /// Email only: `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub smtp_tls: SmtpTls,
    /// Email only: a PEM file of CA certificates to trust for the server,
    /// beside the system's (a company CA).
    pub smtp_ca_file: Option<PathBuf>,
    /// Email only: the SMTP login; needs one of the two password fields.
    pub smtp_username: Option<String>,
    /// Email only: an environment variable holding the SMTP password.
    pub smtp_password_env: Option<String>,
    /// Email only: a file holding the SMTP password (trimmed), re-read at
    /// every delivery.
    pub smtp_password_file: Option<PathBuf>,
    /// Email only: the sender, `name <address>` or `address`.
    pub from: Option<String>,
    /// Email only: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

impl ChannelConfig {
    /// The SMTP port: configured, or the one the TLS mode is served on.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
            .unwrap_or_else(|| self.smtp_tls.default_port())
    }
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
            if channel.kind == ChannelKind::Email {
                validate_email(name, channel)?;
                continue;
            }
            if let Some(field) = email_field_set(channel) {
                anyhow::bail!(
                    "invalid controller config: notifications.channels.{name}.{field}: only email channels have it"
                );
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
                parse_url(url).map_err(|problem| {
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

/// The checks of an email channel: where it connects, who it writes to,
/// and that a password never travels without TLS.
fn validate_email(name: &str, channel: &ChannelConfig) -> anyhow::Result<()> {
    let key =
        |field: &str| format!("invalid controller config: notifications.channels.{name}.{field}");
    let url_set = channel.url.is_some() || channel.url_env.is_some() || channel.url_file.is_some();
    let signed = channel.signing_secret_env.is_some() || channel.signing_secret_file.is_some();
    if url_set || signed {
        anyhow::bail!(
            "invalid controller config: notifications.channels.{name}: an email channel has no url or signing \
             secret; set smtp_host, from and to"
        );
    }
    let host = channel.smtp_host.as_deref().unwrap_or_default().trim();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
        anyhow::bail!(
            "{}: the SMTP server's host name (e.g. smtp.example.com) is required",
            key("smtp_host")
        );
    }
    if channel.smtp_port == Some(0) {
        anyhow::bail!("{}: 1 to 65535", key("smtp_port"));
    }
    let from = channel.from.as_deref().unwrap_or_default();
    from.parse::<lettre::message::Mailbox>().map_err(|_| {
        anyhow::anyhow!(
            "{}: {from:?} is not an address like \"pgrollout <pgrollout@example.com>\"",
            key("from")
        )
    })?;
    if channel.to.is_empty() {
        anyhow::bail!("{}: at least one recipient", key("to"));
    }
    for to in &channel.to {
        to.parse::<lettre::message::Mailbox>()
            .map_err(|_| anyhow::anyhow!("{}: {to:?} is not an email address", key("to")))?;
    }
    let password = channel.smtp_password_env.is_some() || channel.smtp_password_file.is_some();
    if channel.smtp_password_env.is_some() && channel.smtp_password_file.is_some() {
        anyhow::bail!(
            "{}: set at most one of smtp_password_env, smtp_password_file",
            key("smtp_password_env")
        );
    }
    if password != channel.smtp_username.is_some() {
        anyhow::bail!(
            "{}: set smtp_username together with smtp_password_env or smtp_password_file, or neither",
            key("smtp_username")
        );
    }
    if password && channel.smtp_tls == SmtpTls::None {
        anyhow::bail!(
            "{}: \"none\" would send the SMTP password in clear; use \"starttls\" or \"tls\"",
            key("smtp_tls")
        );
    }
    if channel.smtp_ca_file.is_some() && channel.smtp_tls == SmtpTls::None {
        anyhow::bail!(
            "{}: no TLS is used with smtp_tls = \"none\"",
            key("smtp_ca_file")
        );
    }
    Ok(())
}

/// The first email-only field set on a channel of another kind.
fn email_field_set(channel: &ChannelConfig) -> Option<&'static str> {
    [
        ("smtp_host", channel.smtp_host.is_some()),
        ("smtp_port", channel.smtp_port.is_some()),
        ("smtp_tls", channel.smtp_tls != SmtpTls::default()),
        ("smtp_ca_file", channel.smtp_ca_file.is_some()),
        ("smtp_username", channel.smtp_username.is_some()),
        ("smtp_password_env", channel.smtp_password_env.is_some()),
        ("smtp_password_file", channel.smtp_password_file.is_some()),
        ("from", channel.from.is_some()),
        ("to", !channel.to.is_empty()),
    ]
    .into_iter()
    .find_map(|(field, set)| set.then_some(field))
}

/// An absolute `http` or `https` URL with a host; the problem otherwise,
/// in words that do not repeat the URL.
pub fn parse_url(text: &str) -> Result<reqwest::Url, &'static str> {
    let url = reqwest::Url::parse(text).map_err(|_| "not an absolute URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs are supported");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    Ok(url)
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
        let mail = parse(
            "[channels.mail]\nkind = \"email\"\nsmtp_host = \"smtp.example.com\"\nsmtp_tls = \"tls\"\n\
             from = \"pgrollout <p@example.com>\"\nto = [\"dba@example.com\"]\n",
        )
        .expect("valid email channel");
        assert_eq!(mail.channels["mail"].kind, ChannelKind::Email);
        assert_eq!(mail.channels["mail"].smtp_port(), 465);
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
                "[channels.a]\nkind = \"mail\"\nurl = \"http://h\"\n",
                "unknown channel kind \"mail\": use one of \"slack\", \"webhook\", \"email\"",
            ),
            (
                "[channels.a]\nkind = \"email\"\nurl = \"http://h\"\n",
                "an email channel has no url",
            ),
            (
                "[channels.a]\nkind = \"email\"\nsmtp_host = \"mx\"\nfrom = \"p@x.example\"\n",
                "channels.a.to: at least one recipient",
            ),
            (
                "[channels.a]\nkind = \"email\"\nsmtp_host = \"mx\"\nfrom = \"nobody\"\nto = [\"d@x.example\"]\n",
                "channels.a.from: \"nobody\" is not an address",
            ),
            (
                "[channels.a]\nkind = \"email\"\nsmtp_host = \"mx\"\nfrom = \"p@x.example\"\nto = [\"d@x.example\"]\n\
                 smtp_tls = \"none\"\nsmtp_username = \"u\"\nsmtp_password_env = \"P\"\n",
                "would send the SMTP password in clear",
            ),
            (
                "[channels.a]\nkind = \"email\"\nsmtp_host = \"mx\"\nfrom = \"p@x.example\"\nto = [\"d@x.example\"]\n\
                 smtp_username = \"u\"\n",
                "smtp_username together with",
            ),
            (
                "[channels.a]\nkind = \"slack\"\nurl = \"http://h\"\nto = [\"d@x.example\"]\n",
                "channels.a.to: only email channels",
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
