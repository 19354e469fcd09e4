//! Email channels: one plain-text message per event over SMTP, with
//! STARTTLS or implicit TLS (rustls, ring) and an optional login whose
//! password is read from a variable or a file at each delivery. The message
//! carries the same facts as the Slack one: the line people read, the
//! event, status, trace and plan.
//!
//! The message id is derived from the event id, so retries of one event
//! (and a restarted controller sending it again) share it and mail systems
//! can drop the duplicates.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::deliver::AttemptError;
use super::event::Event;
use super::secret;
use crate::config::notifications::{ChannelConfig, SmtpTls};

/// What is sent for one event, whoever receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    /// `<evt-…@pgrollout>`: the same on every attempt.
    pub message_id: String,
}

/// The message for `event`.
pub fn mail(event: &Event) -> Mail {
    let event_id = super::webhook::event_id(event);
    let subject = format!(
        "[pgrollout] {} {}: {}",
        event.environment.to_uppercase(),
        event.name,
        event.procedure
    );
    let mut text = format!("{}\n\n", event.text());
    let plan = &event.plan_id[..event.plan_id.len().min(12)];
    let exit_code = event.exit_code.map(|c| c.to_string()).unwrap_or_default();
    for (label, value) in [
        ("Event", event.name.as_str()),
        ("Status", event.outcome.as_str()),
        ("Environment", event.environment.as_str()),
        ("Procedure", event.procedure.as_str()),
        ("Rollout", event.rollout_id.as_str()),
        ("By", event.actor.as_str()),
        ("Exit code", exit_code.as_str()),
        ("Trace", event.trace_id.as_str()),
        ("Plan", plan),
        ("Commit", event.commit_sha.as_str()),
        ("Event id", event_id.as_str()),
    ] {
        if !value.is_empty() {
            text.push_str(&format!("{label:<12} {value}\n"));
        }
    }
    Mail {
        subject,
        text,
        message_id: format!("<{event_id}@pgrollout>"),
    }
}

/// One attempt: connect, (STARTTLS,) log in, send, quit.
pub async fn send(
    channel: &ChannelConfig,
    mail: &Mail,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let message = message(channel, mail)?;
    let host = channel.smtp_host.clone().unwrap_or_default();
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(channel.smtp_port())
        .timeout(Some(timeout));
    if channel.smtp_tls != SmtpTls::None {
        let mut parameters = TlsParameters::builder(host);
        if let Some(path) = &channel.smtp_ca_file {
            let pem = std::fs::read(path).map_err(|source| AttemptError::CaFile {
                path: path.display().to_string(),
                source: source.into(),
            })?;
            let certificate =
                Certificate::from_pem(&pem).map_err(|source| AttemptError::CaFile {
                    path: path.display().to_string(),
                    source: source.into(),
                })?;
            parameters = parameters.add_root_certificate(certificate);
        }
        let parameters = parameters.build_rustls().map_err(AttemptError::Smtp)?;
        builder = builder.tls(match channel.smtp_tls {
            SmtpTls::Tls => Tls::Wrapper(parameters),
            _ => Tls::Required(parameters),
        });
    }
    let password = secret::smtp_password(channel).map_err(AttemptError::Password)?;
    if let (Some(username), Some(password)) = (&channel.smtp_username, password) {
        builder = builder.credentials(Credentials::new(username.clone(), password));
    }
    let transport = builder.build();
    // lettre's timeout covers each command; this one the whole exchange.
    tokio::time::timeout(timeout * 4, transport.send(message))
        .await
        .map_err(|_| AttemptError::Timeout(timeout * 4))?
        .map_err(AttemptError::Smtp)?;
    Ok(())
}

/// The MIME message: plain text, UTF-8 (lettre picks the transfer encoding).
fn message(channel: &ChannelConfig, mail: &Mail) -> Result<Message, AttemptError> {
    let invalid = |what: &str| AttemptError::Message(what.to_owned());
    let from: Mailbox = channel
        .from
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| invalid("the from address is not valid"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()))
        .header(ContentType::TEXT_PLAIN);
    for to in &channel.to {
        let to: Mailbox = to
            .parse()
            .map_err(|_| invalid("a to address is not valid"))?;
        builder = builder.to(to);
    }
    builder
        .body(mail.text.clone())
        .map_err(|e| AttemptError::Message(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::RolloutStatus;

    #[test]
    fn the_mail_carries_the_slack_facts_and_a_stable_message_id() {
        let status = RolloutStatus {
            rollout_id: "r-1".into(),
            kind: "deploy".into(),
            environment: "dev".into(),
            actor: "alice".into(),
            state: "failed".into(),
            exit_code: 2,
            finished: true,
            message: "boom".into(),
            label: "addarc".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            plan_id: "0123456789abcdef".into(),
            ..Default::default()
        };
        let event = Event::from_rollout(&status, None).expect("event");
        let mail = mail(&event);
        assert_eq!(mail.subject, "[pgrollout] DEV deploy.failed: addarc");
        assert!(
            mail.text.starts_with(
                "❌ Deploy of addarc to DEV failed (exit 2): boom (by alice, rollout r-1)\n\n"
            ),
            "{}",
            mail.text
        );
        for line in [
            "Event        deploy.failed\n",
            "Status       failed\n",
            "Trace        4bf92f3577b34da6a3ce929d0e0e4736\n",
            "Plan         0123456789ab\n",
        ] {
            assert!(mail.text.contains(line), "{line:?} in {}", mail.text);
        }
        assert_eq!(super::mail(&event).message_id, mail.message_id);
        assert!(mail.message_id.starts_with("<evt-"), "{}", mail.message_id);
    }
}
