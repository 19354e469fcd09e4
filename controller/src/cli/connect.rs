//! The CLI's connection to the controller (mutual TLS with the operator's
//! certificate), and what a refusal means for the exit code.

use std::path::PathBuf;
use std::time::SystemTime;

pub use pgrollout_shared::errors::error_chain;
use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::control_client::ControlClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Largest message the CLI sends or accepts; the controller's own limit
/// (limits.max_message_bytes) is what a plan must fit.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The operator's certificate, for `https://` controllers.
#[derive(clap::Args, Clone, Debug)]
pub struct OperatorTls {
    /// CA certificate that issued the controller's certificate.
    #[arg(long, global = true, env = "PGROLLOUT_CA")]
    ca: Option<PathBuf>,
    /// The operator's certificate (`pgrollout ca issue operator`).
    #[arg(long, global = true, env = "PGROLLOUT_CERT")]
    cert: Option<PathBuf>,
    /// The operator's private key.
    #[arg(long, global = true, env = "PGROLLOUT_KEY")]
    key: Option<PathBuf>,
    /// With several controllers listed in --controller: how long a command
    /// that lost its controller mid-rollout keeps trying the others and
    /// following the rollout there before giving up (exit 2).
    #[arg(long, global = true, env = "PGROLLOUT_FOLLOW_TIMEOUT", default_value = "10m",
          value_parser = humantime::parse_duration)]
    follow_timeout: std::time::Duration,
}

type Refusal = (ExitCode, String);

impl OperatorTls {
    /// The operator's certificate and key files, when both are given: what
    /// the CLI signs approvals with (issue 19).
    pub fn cert_and_key(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert.as_ref().zip(self.key.as_ref())
    }

    /// How long to follow a rollout on another controller after losing one
    /// (`--follow-timeout`; the connection's concern, so it travels here).
    pub fn follow_timeout(&self) -> std::time::Duration {
        self.follow_timeout
    }
}

fn tls_config(tls: &OperatorTls, host: &str) -> Result<ClientTlsConfig, Refusal> {
    let missing = |what: &str, flag: &str, env: &str| {
        (
            ExitCode::ValidationFailed,
            format!(
                "no {what}: an https:// controller needs --ca, --cert and --key (or {env}); issue an operator \
                 certificate with `pgrollout ca issue operator --name <you>` (missing {flag})"
            ),
        )
    };
    let ca = tls
        .ca
        .as_ref()
        .ok_or_else(|| missing("CA certificate", "--ca", "PGROLLOUT_CA"))?;
    let cert = tls
        .cert
        .as_ref()
        .ok_or_else(|| missing("operator certificate", "--cert", "PGROLLOUT_CERT"))?;
    let key = tls
        .key
        .as_ref()
        .ok_or_else(|| missing("operator key", "--key", "PGROLLOUT_KEY"))?;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            (
                ExitCode::ValidationFailed,
                format!("cannot read {}: {e}", path.display()),
            )
        })
    };
    // An expired certificate is refused here, with its dates, rather than as
    // an opaque handshake failure.
    let certs = pgrollout_shared::tls::load_certs(cert)
        .map_err(|e| (ExitCode::ValidationFailed, e.to_string()))?;
    if let Some(leaf) = certs.first() {
        let info = pgrollout_shared::tls::inspect(leaf)
            .map_err(|e| (ExitCode::ValidationFailed, e.to_string()))?;
        pgrollout_shared::tls::check_validity(cert, &info, SystemTime::now())
            .map_err(|e| (ExitCode::ValidationFailed, e.to_string()))?;
        issued_by(ca, cert, &certs)?;
    }
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .domain_name(host.to_owned()))
}

/// Checks locally that the operator's certificate was issued by the CA we
/// trust the controller with — the same check the controller makes — so a
/// certificate from another CA is named as such instead of surfacing as a
/// connection the controller dropped.
fn issued_by(
    ca: &std::path::Path,
    cert: &std::path::Path,
    chain: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<(), Refusal> {
    let invalid = |message: String| (ExitCode::ValidationFailed, message);
    let mut roots = rustls::RootCertStore::empty();
    for root in pgrollout_shared::tls::load_certs(ca).map_err(|e| invalid(e.to_string()))? {
        roots
            .add(root)
            .map_err(|e| invalid(format!("CA certificate {} is unusable: {e}", ca.display())))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .map_err(|e| invalid(format!("CA certificate {} is unusable: {e}", ca.display())))?;
    let now = rustls_pki_types::UnixTime::now();
    verifier.verify_client_cert(&chain[0], &chain[1..], now).map_err(|e| {
        invalid(format!(
            "the operator certificate {} was not issued by the CA in {} ({e}): the controller would refuse it; \
             use a certificate issued by the controller's CA (`pgrollout ca issue operator`)",
            cert.display(),
            ca.display()
        ))
    })?;
    Ok(())
}

/// The controllers `--controller` (or `PGROLLOUT_ADDR`) lists, in order:
/// one address, or several separated by commas (issue 18: controllers
/// sharing one PostgreSQL store, any of which answers for all).
pub fn addresses(list: &str) -> Vec<&str> {
    let listed: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if listed.is_empty() {
        vec![list]
    } else {
        listed
    }
}

/// A `Control` client over the first listed controller that answers.
pub async fn controller(
    address: &str,
    tls: &OperatorTls,
) -> Result<ControlClient<Channel>, Refusal> {
    Ok(controller_reached(address, tls).await?.0)
}

/// [`controller`], with the address of the controller that answered: the
/// one a command following a rollout will say it lost.
pub async fn controller_reached(
    address: &str,
    tls: &OperatorTls,
) -> Result<(ControlClient<Channel>, String), Refusal> {
    let (channel, reached) = first_answering(&addresses(address), tls, true).await?;
    Ok((control_client(channel), reached))
}

/// A `Control` client over the first controller of `list` that answers,
/// the others before `lost` (the one just lost, which may be back); with
/// the address it reached.
pub async fn controller_after_losing(
    list: &str,
    lost: &str,
    tls: &OperatorTls,
) -> Result<(ControlClient<Channel>, String), Refusal> {
    let listed = addresses(list);
    let candidates: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|a| *a != lost)
        .chain(listed.iter().copied().filter(|a| *a == lost))
        .collect();
    let (channel, reached) = first_answering(&candidates, tls, false).await?;
    Ok((control_client(channel), reached))
}

fn control_client(channel: Channel) -> ControlClient<Channel> {
    ControlClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The operator's mTLS connection to the first listed controller that
/// answers, for any of its services (`Control`, `Watches`). One address
/// behaves as it always did; of several, one that cannot be reached is
/// skipped with a line on stderr saying which answered instead.
pub async fn channel(address: &str, tls: &OperatorTls) -> Result<Channel, Refusal> {
    Ok(first_answering(&addresses(address), tls, true).await?.0)
}

/// The first of `candidates` that accepts a connection, and its address. A
/// refusal that is the operator's (bad address, TLS credentials) is final:
/// another controller of the same installation would refuse it too.
async fn first_answering(
    candidates: &[&str],
    tls: &OperatorTls,
    say_skipped: bool,
) -> Result<(Channel, String), Refusal> {
    let mut skipped: Vec<String> = Vec::new();
    let mut last = None;
    for address in candidates {
        match channel_to(address, tls).await {
            Ok(channel) => {
                if say_skipped && !skipped.is_empty() {
                    eprintln!(
                        "pgrollout: {} did not answer; using the controller at {address}",
                        skipped.join(", ")
                    );
                }
                return Ok((channel, (*address).to_owned()));
            }
            Err((ExitCode::DeploymentFailed, message)) => {
                skipped.push((*address).to_owned());
                last = Some(message);
            }
            Err(refused) => return Err(refused),
        }
    }
    let message = last.unwrap_or_else(|| "no controller address given".to_owned());
    Err(match candidates {
        [_] => (ExitCode::DeploymentFailed, message),
        _ => (
            ExitCode::DeploymentFailed,
            format!(
                "none of the controllers {} answered (the last: {message})",
                candidates.join(", ")
            ),
        ),
    })
}

/// The connection to one controller.
async fn channel_to(address: &str, tls: &OperatorTls) -> Result<Channel, Refusal> {
    let invalid = |e: &dyn std::fmt::Display| {
        (
            ExitCode::ValidationFailed,
            format!("invalid controller address {address:?}: {e}"),
        )
    };
    let mut endpoint = Endpoint::from_shared(address.to_owned()).map_err(|e| invalid(&e))?;
    if address.starts_with("https://") {
        let host = endpoint
            .uri()
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        endpoint = endpoint
            .tls_config(tls_config(tls, &host)?)
            .map_err(|e| invalid(&e))?;
    }
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            let chain = error_chain(&e);
            // A TLS refusal means our credentials are wrong: nothing was
            // attempted, so it is a validation failure, not a failed deploy.
            let code = if looks_like_tls_refusal(&chain) {
                ExitCode::ValidationFailed
            } else {
                ExitCode::DeploymentFailed
            };
            (code, describe_connect_error(address, &chain))
        })?;
    Ok(channel)
}

fn describe_connect_error(address: &str, chain: &str) -> String {
    if looks_like_tls_refusal(chain) {
        format!(
            "the controller at {address} refused the TLS connection ({chain}); check that --cert/--key hold an operator \
             certificate issued by the controller's CA and not revoked, and that --ca is that CA"
        )
    } else {
        format!("cannot reach the controller at {address}: {chain}; is `pgrollout serve` running there? (set --controller or PGROLLOUT_ADDR)")
    }
}

fn looks_like_tls_refusal(text: &str) -> bool {
    // With TLS 1.3 the controller checks our certificate after the client
    // considers the handshake done, so a refusal shows up as an alert — or,
    // if the connection is torn down first, as a broken pipe or a cancelled
    // call.
    let text = text.to_ascii_lowercase();
    [
        "alert",
        "certificate",
        "handshake",
        "tls",
        "unknownca",
        "unknown issuer",
        "invalid peer",
        "broken pipe",
        "operation was canceled",
        "connection reset",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// What a failed call means for the operator: the message and the exit code.
/// The controller's own refusals pass through; transport failures (a TLS
/// refusal after the handshake, a dropped connection) get an explanation
/// instead of "Unknown transport error".
pub fn refusal(status: &tonic::Status, address: &str) -> Refusal {
    use tonic::Code;
    let transport = matches!(
        status.code(),
        Code::Unknown | Code::Unavailable | Code::Internal | Code::Cancelled
    ) && ["transport", "connection", "canceled", "cancelled"]
        .iter()
        .any(|needle| status.message().contains(needle));
    if !transport {
        // The controller's refusals quote names and reasons: data.
        let message = pgrollout_shared::text::escape_controls(status.message());
        return (exit_code_of(status), message.into_owned());
    }
    let chain = match std::error::Error::source(status) {
        Some(source) => format!("{}: {}", status.message(), error_chain(source)),
        None => status.message().to_owned(),
    };
    let code = if looks_like_tls_refusal(&chain) {
        ExitCode::ValidationFailed
    } else {
        ExitCode::DeploymentFailed
    };
    (code, describe_connect_error(address, &chain))
}

/// A refusal before anything changed is a validation failure (exit 1); an
/// unreachable agent or controller is a deployment failure (exit 2).
pub fn exit_code_of(status: &tonic::Status) -> ExitCode {
    use tonic::Code;
    if status
        .metadata()
        .contains_key(pgrollout_shared::exit_code::AWAITING_APPROVAL_METADATA)
    {
        return ExitCode::AwaitingApproval;
    }
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::ResourceExhausted => ExitCode::ValidationFailed,
        _ => ExitCode::DeploymentFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::addresses;

    #[test]
    fn one_address_is_used_as_given_and_a_list_is_split_in_order() {
        assert_eq!(
            addresses("https://127.0.0.1:7410"),
            ["https://127.0.0.1:7410"]
        );
        assert_eq!(
            addresses("https://a:7410, https://b:7410,,https://c:7410 "),
            ["https://a:7410", "https://b:7410", "https://c:7410"]
        );
        // Nothing but commas: left as given, for the address error to name.
        assert_eq!(addresses(","), [","]);
    }
}
