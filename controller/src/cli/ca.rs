//! `pgrollout ca init` and `pgrollout ca issue …`: the built-in CA (see
//! `crate::ca`). Prints the files written, the identity, the serial and the
//! validity window — never key material.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::tls::format_utc;

use crate::ca::{self, CaError, InitializedCa, IssuedCertificate, LeafFiles, LeafRequest};

/// `pgrollout ca <command>`.
#[derive(clap::Subcommand)]
pub enum CaCommand {
    /// Create a CA in --dir: ca.pem, ca.key (mode 0600) and trust-domain.
    Init {
        /// Directory for the CA's files (created with mode 0700 if missing).
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain of every identity the CA issues.
        #[arg(long, default_value = "pgrollout.local")]
        trust_domain: String,
        /// How long the CA certificate is valid, e.g. 10y.
        #[arg(long, default_value = "10y", value_parser = parse_validity)]
        validity: Duration,
    },
    /// Issue a certificate and key signed by the CA in --dir.
    #[command(subcommand)]
    Issue(IssueCommand),
}

/// `pgrollout ca issue <kind>`.
#[derive(clap::Subcommand)]
pub enum IssueCommand {
    /// The controller's certificate: server and client authentication.
    Controller {
        /// The CA's directory (from `pgrollout ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// The controller's name, e.g. main.
        #[arg(long)]
        name: String,
        /// DNS name agents and operators connect to (repeatable).
        #[arg(long = "dns", value_name = "NAME", num_args = 1.., required_unless_present = "ip_addresses")]
        dns_names: Vec<String>,
        /// IP address agents and operators connect to (repeatable).
        #[arg(long = "ip", value_name = "ADDRESS", num_args = 1..)]
        ip_addresses: Vec<IpAddr>,
        /// How long the certificate is valid, e.g. 1y.
        #[arg(long, default_value = "1y", value_parser = parse_validity)]
        validity: Duration,
        /// Write PREFIX.pem and PREFIX.key instead of <dir>/controller-<name>.pem/.key.
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
    },
    /// An agent's client certificate, bound to one zone.
    Agent {
        /// The CA's directory (from `pgrollout ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// The network zone the agent serves, e.g. dev.
        #[arg(long)]
        zone: String,
        /// The agent's name, e.g. dev-1.
        #[arg(long)]
        name: String,
        /// How long the certificate is valid, e.g. 90d.
        #[arg(long, default_value = "90d", value_parser = parse_validity)]
        validity: Duration,
        /// Write PREFIX.pem and PREFIX.key instead of <dir>/agent-<zone>-<name>.pem/.key.
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
    },
    /// An operator's client certificate (roles come from the controller's config).
    Operator {
        /// The CA's directory (from `pgrollout ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// The operator's name, e.g. alice.
        #[arg(long)]
        name: String,
        /// How long the certificate is valid, e.g. 90d.
        #[arg(long, default_value = "90d", value_parser = parse_validity)]
        validity: Duration,
        /// Write PREFIX.pem and PREFIX.key instead of <dir>/operator-<name>.pem/.key.
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
    },
}

/// Runs a CA command. Every failure exits 1: nothing is left half-written.
pub fn run(command: CaCommand) -> ExitCode {
    let now = SystemTime::now();
    let outcome = match command {
        CaCommand::Init {
            dir,
            trust_domain,
            validity,
        } => ca::init(&dir, &trust_domain, validity, now).map(|ca| render_init(&dir, &ca)),
        CaCommand::Issue(command) => {
            let (dir, request, validity, out) = command.into_request();
            issue(&dir, &request, validity, out.as_deref(), now)
                .map(|(issued, files)| render_issued(&issued, &request, &files))
        }
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::Success
        }
        Err(error) => {
            eprintln!("pgrollout ca: {:#}", anyhow::Error::from(error));
            ExitCode::ValidationFailed
        }
    }
}

impl IssueCommand {
    fn into_request(self) -> (PathBuf, LeafRequest, Duration, Option<PathBuf>) {
        match self {
            IssueCommand::Controller {
                dir,
                name,
                dns_names,
                ip_addresses,
                validity,
                out,
            } => (
                dir,
                LeafRequest::controller(&name, dns_names, ip_addresses),
                validity,
                out,
            ),
            IssueCommand::Agent {
                dir,
                zone,
                name,
                validity,
                out,
            } => (dir, LeafRequest::agent(&zone, &name), validity, out),
            IssueCommand::Operator {
                dir,
                name,
                validity,
                out,
            } => (dir, LeafRequest::operator(&name), validity, out),
        }
    }
}

fn issue(
    dir: &Path,
    request: &LeafRequest,
    validity: Duration,
    out: Option<&Path>,
    now: SystemTime,
) -> Result<(IssuedCertificate, LeafFiles), CaError> {
    let (not_before, not_after) = ca::validity_window(now, validity)?;
    let authority = ca::load(dir)?;
    let issued = authority.issue(request, not_before, not_after)?;
    let files = match out {
        Some(prefix) => LeafFiles::with_prefix(prefix),
        None => LeafFiles::default_in(dir, &request.role),
    };
    ca::write_leaf(&issued, &files)?;
    Ok((issued, files))
}

/// `humantime` durations (`90d`, `1y`, `12h`), longer than zero.
fn parse_validity(text: &str) -> Result<Duration, String> {
    let validity = humantime::parse_duration(text)
        .map_err(|error| format!("{error} (for example 90d, 1y or 12h)"))?;
    if validity.is_zero() {
        return Err("the validity must be longer than zero".to_owned());
    }
    Ok(validity)
}

fn render_init(dir: &Path, ca: &InitializedCa) -> String {
    let mut text = format!("created a CA for trust domain {}\n", ca.trust_domain);
    let _ = writeln!(text, "  certificate   {}", ca.certificate.display());
    let _ = writeln!(
        text,
        "  private key   {} (mode 0600; keep it on this machine)",
        ca.private_key.display()
    );
    let _ = writeln!(text, "  trust domain  {}", ca.trust_domain_file.display());
    let _ = writeln!(text, "  serial        {}", ca.info.serial_hex);
    let _ = writeln!(
        text,
        "  valid         {} until {}",
        format_utc(ca.info.not_before),
        format_utc(ca.info.not_after)
    );
    let _ = writeln!(
        text,
        "next: pgrollout ca issue controller --dir {} --name main --dns <host name>",
        dir.display()
    );
    text
}

fn render_issued(issued: &IssuedCertificate, request: &LeafRequest, files: &LeafFiles) -> String {
    let mut text = format!(
        "issued a certificate for {}\n",
        issued.identity.display_name()
    );
    let _ = writeln!(text, "  identity      {}", issued.identity);
    let addresses: Vec<String> = (request.dns_names.iter().cloned())
        .chain(request.ip_addresses.iter().map(IpAddr::to_string))
        .collect();
    if !addresses.is_empty() {
        let _ = writeln!(text, "  server names  {}", addresses.join(", "));
    }
    let _ = writeln!(text, "  certificate   {}", files.certificate.display());
    let _ = writeln!(
        text,
        "  private key   {} (mode 0600)",
        files.private_key.display()
    );
    let _ = writeln!(text, "  serial        {}", issued.info.serial_hex);
    let _ = writeln!(
        text,
        "  valid         {} until {}",
        format_utc(issued.info.not_before),
        format_utc(issued.info.not_after)
    );
    text
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use pgrollout_shared::identity::SpiffeId;
    use pgrollout_shared::tls::CertificateInfo;

    use super::*;
    use crate::ca::SecretPem;

    fn info() -> CertificateInfo {
        CertificateInfo {
            spiffe: None,
            serial_hex: "4a1b".to_owned(),
            not_before: UNIX_EPOCH + Duration::from_secs(1_779_271_200),
            not_after: UNIX_EPOCH + Duration::from_secs(1_787_047_200),
            subject: String::new(),
            dns_names: Vec::new(),
        }
    }

    #[test]
    fn init_output_names_the_files_and_never_the_key() {
        let ca = InitializedCa {
            certificate: PathBuf::from("/etc/pgrollout/ca/ca.pem"),
            private_key: PathBuf::from("/etc/pgrollout/ca/ca.key"),
            trust_domain_file: PathBuf::from("/etc/pgrollout/ca/trust-domain"),
            trust_domain: "example.org".to_owned(),
            info: info(),
        };
        assert_eq!(
            render_init(Path::new("/etc/pgrollout/ca"), &ca),
            "created a CA for trust domain example.org\n\
             \x20 certificate   /etc/pgrollout/ca/ca.pem\n\
             \x20 private key   /etc/pgrollout/ca/ca.key (mode 0600; keep it on this machine)\n\
             \x20 trust domain  /etc/pgrollout/ca/trust-domain\n\
             \x20 serial        4a1b\n\
             \x20 valid         2026-05-20 10:00:00 UTC until 2026-08-18 10:00:00 UTC\n\
             next: pgrollout ca issue controller --dir /etc/pgrollout/ca --name main --dns <host name>\n"
        );
    }

    #[test]
    fn issue_output_names_identity_files_serial_and_window() {
        let issued = IssuedCertificate {
            identity: SpiffeId::controller("example.org", "main"),
            certificate_pem: "-----BEGIN CERTIFICATE-----".to_owned(),
            private_key_pem: SecretPem::new("-----BEGIN PRIVATE KEY-----".to_owned()),
            info: info(),
        };
        let request = LeafRequest::controller(
            "main",
            vec!["controller.example.org".to_owned(), "localhost".to_owned()],
            vec![IpAddr::from([127, 0, 0, 1])],
        );
        let text = render_issued(
            &issued,
            &request,
            &LeafFiles::with_prefix(Path::new("/etc/pgrollout/controller")),
        );
        assert_eq!(
            text,
            "issued a certificate for controller main\n\
             \x20 identity      spiffe://example.org/controller/main\n\
             \x20 server names  controller.example.org, localhost, 127.0.0.1\n\
             \x20 certificate   /etc/pgrollout/controller.pem\n\
             \x20 private key   /etc/pgrollout/controller.key (mode 0600)\n\
             \x20 serial        4a1b\n\
             \x20 valid         2026-05-20 10:00:00 UTC until 2026-08-18 10:00:00 UTC\n"
        );
        assert!(!text.contains("PRIVATE KEY-----"));
    }

    /// `pgrollout ca …` as `cli/mod.rs` mounts it.
    #[derive(clap::Parser)]
    struct Ca {
        #[command(subcommand)]
        command: CaCommand,
    }

    fn parse(arguments: &[&str]) -> Result<CaCommand, clap::Error> {
        use clap::Parser as _;
        Ca::try_parse_from(std::iter::once("ca").chain(arguments.iter().copied()))
            .map(|ca| ca.command)
    }

    fn run_args(arguments: &[&str]) -> ExitCode {
        run(parse(arguments).expect("valid arguments"))
    }

    #[test]
    fn commands_run_end_to_end() {
        use clap::CommandFactory as _;
        Ca::command().debug_assert();
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("ca");
        let dir = dir.to_str().expect("utf-8 path");

        assert_eq!(run_args(&["init", "--dir", dir]), ExitCode::Success);
        assert_eq!(
            run_args(&["init", "--dir", dir]),
            ExitCode::ValidationFailed
        );
        let agent = [
            "issue", "agent", "--dir", dir, "--zone", "dev", "--name", "dev-1",
        ];
        assert_eq!(run_args(&agent), ExitCode::Success);
        assert!(Path::new(dir).join("agent-dev-dev-1.key").exists());
        let controller = [
            "issue",
            "controller",
            "--dir",
            dir,
            "--name",
            "main",
            "--dns",
            "localhost",
            "controller.test",
            "--ip",
            "127.0.0.1",
            "--validity",
            "30d",
        ];
        assert_eq!(run_args(&controller), ExitCode::Success);
        let prefix = temp.path().join("alice");
        let prefix = prefix.to_str().expect("utf-8 path");
        let operator = [
            "issue", "operator", "--dir", dir, "--name", "alice", "--out", prefix,
        ];
        assert_eq!(run_args(&operator), ExitCode::Success);
        assert!(temp.path().join("alice.pem").exists());

        let bad_zone = [
            "issue", "agent", "--dir", dir, "--zone", "Prod", "--name", "p",
        ];
        assert_eq!(run_args(&bad_zone), ExitCode::ValidationFailed);
        let elsewhere = temp.path().join("nothing");
        let no_ca = [
            "issue",
            "operator",
            "--dir",
            elsewhere.to_str().expect("utf-8"),
            "--name",
            "a",
        ];
        assert_eq!(run_args(&no_ca), ExitCode::ValidationFailed);
        assert!(parse(&["issue", "controller", "--dir", dir, "--name", "main"]).is_err());
        assert!(parse(&[
            "issue",
            "agent",
            "--dir",
            dir,
            "--zone",
            "dev",
            "--name",
            "a",
            "--validity",
            "0d"
        ])
        .is_err());
    }

    #[test]
    fn validity_must_be_a_positive_duration() {
        assert_eq!(parse_validity("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(parse_validity("1y").is_ok());
        assert!(parse_validity("0s").is_err());
        assert!(parse_validity("soon").is_err());
    }
}
