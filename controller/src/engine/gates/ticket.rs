//! The change-control ticket gate (SEED.md "change ticket"): the operator
//! attaches a ticket with `--ticket`; when `[change_control] ticket_url` is
//! configured, the controller also asks the change-control system about it
//! with one GET, and only a 2xx answer passes.
//!
//! The ticket id goes into a URL, so it is held to the characters ticket ids
//! use (letters, digits, `-`, `_`, `.`): nothing an operator types can add a
//! path segment, a query or another host.

use super::GateResult;
use crate::config::GateName;

pub use crate::config::change_control::ChangeControlConfig;
use crate::config::change_control::PLACEHOLDER;

const LONGEST_TICKET: usize = 64;

/// The configured lookup, with its HTTP client.
pub struct TicketCheck {
    config: ChangeControlConfig,
    /// Built once; an error here fails the gate with the reason.
    client: Result<reqwest::Client, String>,
}

impl TicketCheck {
    pub fn new(config: ChangeControlConfig) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("pgrollout/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout)
            // A redirect is not a yes: "anything but 2xx fails the gate".
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| pgrollout_shared::errors::error_chain(&e.without_url()));
        TicketCheck { config, client }
    }

    /// Asks about `ticket` (already validated): passed on 2xx, failed with
    /// the status or the cause otherwise.
    async fn verify(&self, ticket: &str) -> GateResult {
        let gate = GateName::ChangeTicket;
        let url_text = self.config.ticket_url.replace(PLACEHOLDER, ticket);
        let shown = shown_url(&url_text);
        let client = match &self.client {
            Ok(client) => client,
            Err(error) => {
                return GateResult::failed(
                    gate,
                    format!("cannot check ticket {ticket}: no HTTP client ({error})"),
                )
            }
        };
        let mut request = client
            .get(&url_text)
            .timeout(self.config.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(variable) = &self.config.authorization_env {
            match std::env::var(variable) {
                Ok(value) => request = request.header(reqwest::header::AUTHORIZATION, value.trim()),
                Err(_) => {
                    return GateResult::failed(
                        gate,
                        format!(
                            "cannot check ticket {ticket}: change_control.authorization_env names {variable}, which is \
                             not set in the controller's environment"
                        ),
                    )
                }
            }
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => GateResult::passed(
                gate,
                format!("change ticket {ticket} verified: GET {shown} answered {}", response.status()),
            ),
            Ok(response) => GateResult::failed(
                gate,
                format!(
                    "change ticket {ticket} was not confirmed: GET {shown} answered {}; attach a valid, open ticket \
                     with --ticket",
                    response.status()
                ),
            ),
            Err(error) if error.is_timeout() => GateResult::failed(
                gate,
                format!(
                    "change ticket {ticket} could not be checked: GET {shown} did not answer within {}",
                    humantime::format_duration(self.config.timeout)
                ),
            ),
            Err(error) => GateResult::failed(
                gate,
                format!(
                    "change ticket {ticket} could not be checked: GET {shown} failed: {}",
                    pgrollout_shared::errors::error_chain(&error.without_url())
                ),
            ),
        }
    }
}

/// The URL as gate reasons show it: without its query, where a
/// change-control system might expect an API key.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Whether `ticket` looks like a ticket id: 1–64 of letters, digits, `-`,
/// `_`, `.`, starting with a letter or digit (so never `..`).
pub fn valid_ticket_id(ticket: &str) -> bool {
    let mut chars = ticket.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && ticket.len() <= LONGEST_TICKET
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The gate: a ticket must be attached and well-formed; with a lookup
/// configured it must also be confirmed by the change-control system.
pub async fn gate(ticket: Option<&str>, check: Option<&TicketCheck>) -> GateResult {
    let gate = GateName::ChangeTicket;
    let Some(ticket) = ticket.map(str::trim).filter(|t| !t.is_empty()) else {
        return GateResult::failed(gate, "no change ticket attached; pass --ticket");
    };
    if !valid_ticket_id(ticket) {
        return GateResult::failed(
            gate,
            format!(
                "{ticket:?} is not a ticket id: use 1-{LONGEST_TICKET} letters, digits, '-', '_' or '.', starting with a \
                 letter or digit (e.g. CHG-1042)"
            ),
        );
    }
    match check {
        Some(check) => check.verify(ticket).await,
        None => GateResult::passed(gate, format!("change ticket attached: {ticket}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::gates::GateState;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(ticket_url: &str) -> ChangeControlConfig {
        ChangeControlConfig {
            ticket_url: ticket_url.into(),
            timeout: Duration::from_millis(500),
            authorization_env: None,
        }
    }

    #[test]
    fn ticket_ids_cannot_reach_outside_their_path_segment() {
        for good in ["CHG-1042", "OPS_7", "change.2026.11", "42"] {
            assert!(valid_ticket_id(good), "{good}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "CHG-1/../../admin",
            "CHG-1?x=1",
            "CHG-1#",
            "CHG 1",
            "CHG-1%2F",
            "@evil.example",
            &"A".repeat(65),
        ] {
            assert!(!valid_ticket_id(bad), "{bad:?}");
        }
    }

    /// A listener that answers one request with `status` and reports the
    /// request line and headers it received.
    async fn answer_once(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return String::new();
            };
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let reply =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
            String::from_utf8_lossy(&head).into_owned()
        });
        (format!("http://{address}"), task)
    }

    #[tokio::test]
    async fn a_2xx_confirms_the_ticket_and_anything_else_names_the_status() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (base, request) = answer_once("200 OK").await;
        let mut settings = config(&format!("{base}/rest/api/2/issue/{{ticket}}?fields=status"));
        settings.authorization_env = Some("PGROLLOUT_TEST_TICKET_AUTH".into());
        std::env::set_var("PGROLLOUT_TEST_TICKET_AUTH", "Bearer s3cret-token");
        let check = TicketCheck::new(settings);
        let result = gate(Some("CHG-1042"), Some(&check)).await;
        assert_eq!(result.state, GateState::Passed, "{result:?}");
        assert_eq!(
            result.reason,
            format!("change ticket CHG-1042 verified: GET {base}/rest/api/2/issue/CHG-1042 answered 200 OK")
        );
        let head = request.await.expect("listener");
        assert!(
            head.starts_with("GET /rest/api/2/issue/CHG-1042?fields=status HTTP/1.1"),
            "{head}"
        );
        assert!(
            head.to_lowercase()
                .contains("authorization: bearer s3cret-token"),
            "{head}"
        );
        assert!(
            !result.reason.contains("s3cret"),
            "the secret is never shown"
        );

        let (base, _) = answer_once("404 Not Found").await;
        let check = TicketCheck::new(config(&format!("{base}/issue/{{ticket}}")));
        let result = gate(Some("CHG-9"), Some(&check)).await;
        assert_eq!(result.state, GateState::Failed);
        assert!(
            result.reason.contains("answered 404 Not Found"),
            "{}",
            result.reason
        );

        let result = gate(Some("CHG-1/../admin"), Some(&check)).await;
        assert_eq!(result.state, GateState::Failed);
        assert!(
            result.reason.contains("is not a ticket id"),
            "{}",
            result.reason
        );
    }

    #[tokio::test]
    async fn a_change_control_system_that_does_not_answer_fails_the_gate_in_time() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        // Accepts and never answers.
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream);
            }
        });
        let check = TicketCheck::new(config(&format!("{base}/issue/{{ticket}}")));
        let started = std::time::Instant::now();
        let result = gate(Some("CHG-1"), Some(&check)).await;
        assert_eq!(result.state, GateState::Failed);
        assert!(
            result.reason.contains("did not answer within 500ms"),
            "{}",
            result.reason
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        held.abort();
    }
}
