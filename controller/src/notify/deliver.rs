//! Posting one event to one channel: a bounded number of attempts, each
//! with its own timeout, exponential backoff between them, and an audit
//! entry (`notification.failed`) when the last one fails. Runs on its own
//! task: nothing here is ever awaited by a rollout.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::email::Mail;
use super::event::Event;
use super::secret::{self, UrlError};
use crate::config::notifications::{ChannelConfig, ChannelKind, NotificationsConfig};
use crate::store::{AuditEntry, Store};

/// One configured channel, by name.
pub struct Channel {
    pub name: String,
    pub config: ChannelConfig,
}

/// What one channel sends for one event.
#[derive(Debug)]
pub enum Payload {
    /// Posted as JSON (Slack, webhooks).
    Json(Value),
    /// Mailed (email channels).
    Mail(Mail),
}

impl Channel {
    /// What this channel sends for `event`.
    pub fn payload(&self, event: &Event, slack_channel: Option<&str>) -> Payload {
        match self.config.kind {
            ChannelKind::Slack => Payload::Json(super::slack::payload(event, slack_channel)),
            ChannelKind::Webhook => Payload::Json(super::webhook::payload(event)),
            ChannelKind::Email => Payload::Mail(super::email::mail(event)),
        }
    }
}

/// What every delivery shares.
pub struct Courier {
    /// `Err` when the HTTP client could not be built: every delivery then
    /// fails, and is audited, with this reason.
    pub client: Result<reqwest::Client, String>,
    pub timeout: Duration,
    pub attempts: u32,
    pub backoff: Duration,
    pub store: Store,
}

/// Why one attempt failed. Never carries the URL: reqwest's errors are
/// stripped of it before they get here.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("no usable URL")]
    Url(#[from] UrlError),
    #[error("the HTTP client is unavailable: {0}")]
    NoClient(String),
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    #[error("no response within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// With the wait a 429 or 503 asked for in `Retry-After` (seconds).
    #[error("the endpoint answered HTTP {0}")]
    Status(reqwest::StatusCode, Option<Duration>),
    #[error("no usable SMTP password")]
    Password(#[source] UrlError),
    #[error("cannot use smtp_ca_file {path}")]
    CaFile {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot build the message: {0}")]
    Message(String),
    /// lettre's errors quote the server's reply, never the credentials.
    #[error("SMTP delivery failed")]
    Smtp(#[source] lettre::transport::smtp::Error),
}

impl AttemptError {
    /// Whether another attempt could succeed: not for a missing secret or a
    /// 4xx other than 429, which will answer the same again.
    fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Url(_)
            | AttemptError::NoClient(_)
            | AttemptError::Password(_)
            | AttemptError::CaFile { .. }
            | AttemptError::Message(_) => false,
            // A 4xx reply (mailbox busy, greylisting) or a lost connection may
            // pass; a 5xx reply or a certificate the server will show again
            // will not.
            AttemptError::Smtp(error) => {
                !(error.is_permanent() || error.is_client() || error.is_tls())
            }
            AttemptError::Status(status, _) => {
                status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            AttemptError::Request(_) | AttemptError::Timeout(_) => true,
        }
    }
}

impl Courier {
    pub fn new(settings: &NotificationsConfig, store: Store) -> Courier {
        let client = reqwest::Client::builder()
            .user_agent(concat!("pgrollout/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout)
            // A redirect could carry the body somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("{:#}", anyhow::Error::from(e.without_url())));
        Courier {
            client,
            timeout: settings.timeout,
            attempts: settings.attempts,
            backoff: settings.backoff,
            store,
        }
    }

    /// Delivers `body` to `channel`, retrying; audits the final failure.
    pub async fn deliver(&self, channel: Arc<Channel>, event: Arc<Event>, body: Payload) {
        let mut delay = self.backoff;
        let mut attempt = 0;
        let error = loop {
            attempt += 1;
            let error = match self.attempt(&channel, &body).await {
                Ok(()) => {
                    tracing::info!(channel = %channel.name, event = %event.name, rollout_id = %event.rollout_id, attempt, "notification delivered");
                    return;
                }
                Err(error) => error,
            };
            if attempt >= self.attempts || !error.is_retryable() {
                break error;
            }
            tracing::debug!(channel = %channel.name, attempt, error = %chain(&error), "notification attempt failed; retrying");
            // Jitter keeps channels that failed together from retrying in step;
            // an endpoint that said when to come back is not asked sooner.
            let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 10));
            let asked = match &error {
                AttemptError::Status(_, Some(after)) => (*after).min(MAX_RETRY_AFTER),
                _ => Duration::ZERO,
            };
            tokio::time::sleep((delay + jitter).max(asked)).await;
            delay = delay.saturating_mul(2);
        };
        let error = chain(&error);
        tracing::warn!(channel = %channel.name, event = %event.name, rollout_id = %event.rollout_id, attempts = attempt, error = %error, "notification failed");
        super::failures::count_notification_failure(&channel.name);
        let entry = AuditEntry {
            actor: "controller".to_owned(),
            action: "notification.failed".to_owned(),
            outcome: "failed".to_owned(),
            rollout_id: Some(event.rollout_id.clone()).filter(|id| !id.is_empty()),
            environment: Some(event.environment.clone()),
            procedure: Some(event.procedure.clone()),
            trace_id: Some(event.trace_id.clone()).filter(|id| !id.is_empty()),
            details: format!(
                "channel {} ({}): event {}: {attempt} attempt(s) failed; last: {error}",
                channel.name,
                channel.config.kind.as_str(),
                event.name
            ),
        };
        if let Err(error) = self.store.audit(entry).await {
            tracing::error!(error = %anyhow::Error::from(error), "auditing a failed notification failed");
        }
    }

    async fn attempt(&self, channel: &Channel, body: &Payload) -> Result<(), AttemptError> {
        let body = match body {
            Payload::Json(body) => body,
            Payload::Mail(mail) => {
                return super::email::send(&channel.config, mail, self.timeout).await
            }
        };
        let client = self
            .client
            .as_ref()
            .map_err(|e| AttemptError::NoClient(e.clone()))?;
        let url = secret::resolve(&channel.config)?;
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut request = client
            .post(url.as_url().clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(id) = body.get("event_id").and_then(Value::as_str) {
            request = request.header(EVENT_ID_HEADER, id);
        }
        if let Some(key) = secret::signing_key(&channel.config)? {
            // Timestamped, so a captured body cannot be replayed later.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request.header(SIGNATURE_HEADER, signature(&key, now, &bytes));
        }
        let request = request.body(bytes).send();
        // reqwest's own timeout covers the request; this one also covers a
        // resolver that never answers.
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| AttemptError::Timeout(self.timeout))?
            .map_err(|e| match e.is_timeout() {
                true => AttemptError::Timeout(self.timeout),
                false => AttemptError::Request(e.without_url()),
            })?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(AttemptError::Status(status, retry_after(&response))),
        }
    }
}

/// The event's id, the same on every attempt: receivers de-duplicate by it.
pub const EVENT_ID_HEADER: &str = "x-pgrollout-event-id";
/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (webhooks with a
/// signing secret).
pub const SIGNATURE_HEADER: &str = "x-pgrollout-signature";

/// The signature header's value for `body` signed at `unix_seconds`.
pub fn signature(key: &[u8], unix_seconds: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(format!("{unix_seconds}.").as_bytes());
    context.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(context.sign().as_ref())
    )
}

/// The longest `Retry-After` honoured: a delivery must not hold its task
/// (and the event) for longer; past it the wait is this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` in its delay-seconds form.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// The error with its causes, `a: b: c`.
fn chain(error: &AttemptError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // lettre shows the SMTP server's reply and also gives it as the
        // source: say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::notify::event::Outcome;

    /// Answers each request with the next status of `statuses` (the last
    /// one repeats), counting requests.
    async fn responder(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                let mut buffer = vec![0; 64 * 1024];
                let _ = stream.read(&mut buffer).await;
                // A 429 asks for a one-second wait, as rate limiters do.
                let retry_after = if status == 429 {
                    "retry-after: 1\r\n"
                } else {
                    ""
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{retry_after}content-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        (format!("http://{address}/hook"), count)
    }

    fn setup(url: &str) -> (tempfile::TempDir, Courier, Arc<Channel>, Arc<Event>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.sqlite")).expect("store");
        let settings = NotificationsConfig {
            backoff: Duration::from_millis(10),
            ..Default::default()
        };
        let channel = Channel {
            name: "ops-hook".into(),
            config: ChannelConfig {
                kind: ChannelKind::Webhook,
                url: Some(url.to_owned()),
                ..Default::default()
            },
        };
        let event = Event {
            name: "deploy.failed".into(),
            kind: "deploy".into(),
            outcome: Outcome::Failed,
            rollout_id: "r-1".into(),
            environment: "dev".into(),
            procedure: "addarc".into(),
            actor: "alice".into(),
            state: "failed".into(),
            exit_code: Some(2),
            message: "boom".into(),
            trace_id: String::new(),
            plan_id: String::new(),
            commit_sha: String::new(),
            emergency: false,
            emergency_reason: None,
            started_at_unix_ms: 0,
            finished_at_unix_ms: None,
            approvals_required: None,
            watch_id: None,
        };
        (
            dir,
            Courier::new(&settings, store),
            Arc::new(channel),
            Arc::new(event),
        )
    }

    async fn failures(courier: &Courier) -> Vec<String> {
        courier
            .store
            .audit_entries()
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.entry.action == "notification.failed")
            .map(|e| e.entry.details)
            .collect()
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_one_attempt_succeeds() {
        let (url, count) = responder(vec![500, 503, 200]).await;
        let (_dir, courier, channel, event) = setup(&url);
        courier.deliver(channel, event, json_body()).await;
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert!(failures(&courier).await.is_empty());
    }

    /// Accepts one request, answers 200, hands over its raw text.
    async fn capture_one() -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (sender, receiver) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = vec![0; 64 * 1024];
            // Until the head and as many body bytes as it announces.
            loop {
                let Ok(n) = stream.read(&mut buffer).await else {
                    return;
                };
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length || n == 0 {
                        break;
                    }
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = sender.send(String::from_utf8_lossy(&request).to_string());
        });
        (format!("http://{address}/hook"), receiver)
    }

    #[tokio::test]
    async fn a_signed_webhook_carries_a_verifiable_signature_and_its_event_id() {
        let (url, request) = capture_one().await;
        let (dir, courier, channel, event) = setup(&url);
        let key_file = dir.path().join("signing.key");
        std::fs::write(&key_file, "s3cret-key\n").expect("write");
        let mut config = channel.config.clone();
        config.signing_secret_file = Some(key_file);
        let channel = Arc::new(Channel {
            name: channel.name.clone(),
            config,
        });
        let body = crate::notify::webhook::payload(&event);
        courier
            .deliver(channel, event, Payload::Json(body.clone()))
            .await;
        let request = request.await.expect("one request");
        let (head, sent) = request.split_once("\r\n\r\n").expect("head");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (key, value) = l.split_once(": ")?;
                    key.eq_ignore_ascii_case(name).then(|| value.to_owned())
                })
                .unwrap_or_else(|| panic!("no {name} in {head}"))
        };
        assert_eq!(
            header(EVENT_ID_HEADER),
            body["event_id"].as_str().expect("event id")
        );
        let signed = header(SIGNATURE_HEADER);
        let t: u64 = signed
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("t=");
        assert_eq!(signed, signature(b"s3cret-key", t, sent.as_bytes()));
        assert_ne!(signed, signature(b"another-key", t, sent.as_bytes()));
    }

    #[tokio::test]
    async fn a_429_is_retried_no_sooner_than_its_retry_after() {
        let (url, count) = responder(vec![429, 200]).await;
        let (_dir, courier, channel, event) = setup(&url);
        let started = std::time::Instant::now();
        courier.deliver(channel, event, json_body()).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "retried after {:?}, backoff 10 ms, Retry-After 1 s",
            started.elapsed()
        );
        assert!(failures(&courier).await.is_empty());
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried_and_is_audited_without_the_url() {
        let (url, count) = responder(vec![404]).await;
        let (_dir, courier, channel, event) = setup(&url);
        courier.deliver(channel, event, json_body()).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(
            failures(&courier).await,
            ["channel ops-hook (webhook): event deploy.failed: 1 attempt(s) failed; last: the endpoint answered HTTP 404 Not Found"]
        );
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_tried_three_times_then_audited() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let (_dir, courier, channel, event) =
            setup(&format!("http://127.0.0.1:{port}/secret-path"));
        courier.deliver(channel, event, json_body()).await;
        let failures = failures(&courier).await;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("channel ops-hook (webhook): event deploy.failed: 3 attempt(s) failed; last: request failed: "),
            "{failures:?}"
        );
        assert!(!failures[0].contains("secret-path"), "{failures:?}");
    }

    fn json_body() -> Payload {
        Payload::Json(serde_json::json!({"text": "x"}))
    }
}
