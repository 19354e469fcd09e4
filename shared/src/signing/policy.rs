//! The agent's approval policy (issue 19), read from its own config so that
//! a compromised controller cannot relax it: which CA signs operator
//! certificates, who counts, how many distinct approvers each target needs,
//! whether an emergency action needs an admin, and what is revoked.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

/// `[approvals]` as written in the agent's TOML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// PEM file of the CA(s) that issue operator certificates.
    pub operator_ca: PathBuf,
    /// The environment this agent's targets serve: every statement must name it.
    pub environment: String,
    /// Operator names whose approvals count.
    pub approvers: Vec<String>,
    /// Operator names that may sign break-glass (emergency) actions.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Distinct approvers (never the requester) a change needs, unless a
    /// target says otherwise.
    #[serde(default = "one")]
    pub required_approvers: usize,
    /// Distinct approvers (never the requester) a rollback, disable, enable
    /// or adoption needs besides its requester's signature. Default 0: the
    /// requester's own signed statement suffices, since these restore or
    /// switch off versions the zone's ledger holds and the controller parks
    /// no operation for approvals (more makes them impossible to run).
    #[serde(default)]
    pub operation_approvers: usize,
    /// Per target: `[approvals.targets.main] required_approvers = 2`.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetRule>,
    /// An emergency rollback needs one admin's signature with a reason
    /// (default); false lets it go through the ordinary rule instead.
    #[serde(default = "yes")]
    pub emergency_requires_admin: bool,
    /// A file of revoked operators, one a line: a certificate serial (hex)
    /// or an operator name; `#` starts a comment. Re-read for every job.
    #[serde(default)]
    pub revocation_list: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRule {
    pub required_approvers: usize,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// The policy in force: the config with its CA file read.
#[derive(Clone, Debug)]
pub struct ApprovalPolicy {
    pub config: ApprovalsConfig,
    pub operator_ca: Vec<CertificateDer<'static>>,
}

/// Why a policy cannot be used; the agent does not start with one.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("[approvals] operator_ca: {0}")]
    Ca(#[from] crate::tls::TlsFileError),
    #[error("[approvals] {0}")]
    Invalid(String),
}

impl ApprovalPolicy {
    pub fn load(config: ApprovalsConfig) -> Result<ApprovalPolicy, PolicyError> {
        let operator_ca = crate::tls::load_certs(&config.operator_ca)?;
        for anchor in &operator_ca {
            webpki::anchor_from_trusted_cert(anchor).map_err(|e| {
                PolicyError::Invalid(format!(
                    "operator_ca {}: not a usable CA certificate ({e})",
                    config.operator_ca.display()
                ))
            })?;
        }
        if config.environment.trim().is_empty() {
            return Err(PolicyError::Invalid("environment must be set".into()));
        }
        if config.approvers.is_empty() && config.required_approvers > 0 {
            return Err(PolicyError::Invalid(
                "approvers is empty, so no change could ever be approved".into(),
            ));
        }
        if config.emergency_requires_admin && config.admins.is_empty() {
            tracing::warn!("[approvals] admins is empty: emergency actions will be refused");
        }
        if let Some(path) = &config.revocation_list {
            read_revocations(path).map_err(PolicyError::Invalid)?;
        }
        Ok(ApprovalPolicy {
            config,
            operator_ca,
        })
    }

    /// Distinct approvers a change of `target` needs.
    pub fn required_for(&self, target: &str) -> usize {
        self.config
            .targets
            .get(target)
            .map_or(self.config.required_approvers, |rule| {
                rule.required_approvers
            })
    }

    /// The revoked serials (lower-case hex, no leading zeros) and names, read
    /// now. An unreadable list refuses every job (fails closed).
    pub fn revocations(&self) -> Result<Revoked, String> {
        match &self.config.revocation_list {
            Some(path) => read_revocations(path),
            None => Ok(Revoked::default()),
        }
    }
}

/// Revoked operator certificates and names.
#[derive(Clone, Debug, Default)]
pub struct Revoked {
    pub serials: HashSet<String>,
    pub names: HashSet<String>,
}

/// A serial as `x509-parser` prints it: lower-case hex, no colons, no
/// leading zeros.
pub fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

fn read_revocations(path: &Path) -> Result<Revoked, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("revocation_list {}: {e}", path.display()))?;
    let mut revoked = Revoked::default();
    for line in text.lines() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        // Both readings apply: a name that looks like hex revokes both.
        if entry.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            revoked.serials.insert(normalize_serial(entry));
        }
        revoked.names.insert(entry.to_owned());
    }
    Ok(revoked)
}
