//! Who is calling, and may they? Identities come from the verified client
//! certificate, never from what a peer says; roles come from the controller's
//! config. The policy is swapped whole on a config reload.

mod revocation;

use std::collections::BTreeMap;

use pgrollout_shared::identity::{Role, SpiffeId};
use tonic::{Request, Status};

use crate::config::{ControllerConfig, OperatorRole};
use revocation::normalize_serial;
pub use revocation::Revocations;

/// The part of the config that can change without a restart.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `None` only in `--dev-plaintext` mode.
    pub trust_domain: Option<String>,
    pub operators: BTreeMap<String, Vec<OperatorRole>>,
    /// Includes the entries that could not be read, for the caller to report.
    pub revoked: Revocations,
}

impl Policy {
    pub fn from_config(config: &ControllerConfig) -> Self {
        Policy {
            trust_domain: config.tls.as_ref().map(|t| t.trust_domain.clone()),
            operators: config.operators.clone(),
            revoked: Revocations::parse(&config.security.revoked),
        }
    }

    /// Whether this identity or this certificate serial is revoked.
    pub fn is_revoked(&self, id: &SpiffeId, serial: &str) -> bool {
        self.revoked.ids.contains(&id.to_string())
            || self.revoked.serials.contains(&normalize_serial(serial))
    }
}

/// The verified identity on a TLS connection: SPIFFE id and serial.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    pub id: SpiffeId,
    pub serial: String,
    /// The end of its validity: the connection ends then, and nothing is
    /// done for it after (`api/expiring_stream.rs`).
    pub not_after: std::time::SystemTime,
}

impl PeerCertificate {
    /// Whether the certificate's validity has ended.
    pub fn expired(&self) -> bool {
        std::time::SystemTime::now() > self.not_after
    }

    fn expiry_refusal(&self) -> Status {
        Status::unauthenticated(format!(
            "the certificate of {} (serial {}) expired at {}; renew it (`pgrollout ca issue`)",
            self.id.display_name(),
            self.serial,
            humantime::format_rfc3339_seconds(self.not_after)
        ))
    }
}

/// Reads the client certificate tonic recorded for this request.
pub fn peer_certificate<T>(request: &Request<T>) -> Result<Option<PeerCertificate>, Status> {
    let Some(certs) = request.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Ok(None);
    };
    let info = pgrollout_shared::tls::inspect(leaf)
        .map_err(|e| Status::unauthenticated(format!("unreadable client certificate: {e}")))?;
    let id = info.spiffe.ok_or_else(|| {
        Status::unauthenticated(format!(
            "client certificate {:?} carries no pgrollout identity (spiffe:// URI)",
            info.subject
        ))
    })?;
    Ok(Some(PeerCertificate {
        id,
        serial: info.serial_hex,
        not_after: info.not_after,
    }))
}

/// An operator making a control call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub roles: Vec<OperatorRole>,
    /// False only in `--dev-plaintext` mode, where the name is as claimed.
    pub verified: bool,
}

impl Caller {
    /// How the caller is recorded in rollouts, the ledger and the audit log.
    pub fn actor(&self) -> String {
        if self.verified {
            self.name.clone()
        } else {
            format!("{} (unverified)", self.name)
        }
    }

    /// Refuses unless the caller holds `role` (admin holds every role, and
    /// any role at all includes viewing: who may deploy or approve may see
    /// what they deploy or approve).
    pub fn require(&self, role: OperatorRole, to: &str) -> Result<(), Status> {
        let views = role == OperatorRole::Viewer && !self.roles.is_empty();
        if views || self.roles.contains(&OperatorRole::Admin) || self.roles.contains(&role) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "operator {} lacks the {} role required to {to}; an admin can grant it in the controller's [operators] config",
            self.name,
            role.as_str()
        )))
    }
}

/// Metadata key the CLI uses to say who the operator is; trusted only in
/// `--dev-plaintext` mode.
pub const CLAIMED_ACTOR_HEADER: &str = "pgrollout-actor";

/// Authenticates an operator call: a certificate of this trust domain with
/// an operator identity that is not revoked.
pub fn authenticate_operator<T>(request: &Request<T>, policy: &Policy) -> Result<Caller, Status> {
    let Some(trust_domain) = &policy.trust_domain else {
        let claimed = request
            .metadata()
            .get(CLAIMED_ACTOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && !v.chars().any(char::is_control))
            .unwrap_or("anonymous");
        return Ok(Caller {
            name: claimed.to_owned(),
            roles: vec![OperatorRole::Admin],
            verified: false,
        });
    };
    let peer = peer_certificate(request)?.ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: operators need one (`pgrollout ca issue operator`)",
        )
    })?;
    let Role::Operator { name } = &peer.id.role else {
        return Err(Status::permission_denied(format!(
            "{} is not an operator identity",
            peer.id
        )));
    };
    if &peer.id.trust_domain != trust_domain {
        return Err(Status::permission_denied(format!(
            "{} is from trust domain {}, this controller serves {trust_domain}",
            peer.id, peer.id.trust_domain
        )));
    }
    if policy.is_revoked(&peer.id, &peer.serial) {
        return Err(Status::permission_denied(format!(
            "the certificate of operator {name} (serial {}) is revoked",
            peer.serial
        )));
    }
    if peer.expired() {
        return Err(peer.expiry_refusal());
    }
    Ok(Caller {
        name: name.clone(),
        roles: policy.operators.get(name).cloned().unwrap_or_default(),
        verified: true,
    })
}

/// An agent as the controller knows it: zone and name from its certificate.
#[derive(Clone, Debug)]
pub struct AgentIdentity {
    pub zone: String,
    pub name: String,
    pub certificate: Option<PeerCertificate>,
}

/// Why an agent was turned away, for the audit log and the agent.
pub struct AgentRejection {
    pub status: Status,
    pub reason: String,
}

/// Derives the agent's zone and name from its certificate and checks the
/// Hello against it. Only in `--dev-plaintext` mode is the Hello believed.
pub fn authenticate_agent(
    certificate: Result<Option<PeerCertificate>, Status>,
    policy: &Policy,
    claimed_zone: &str,
    claimed_name: &str,
) -> Result<AgentIdentity, AgentRejection> {
    let reject = |status: Status| AgentRejection {
        reason: status.message().to_owned(),
        status,
    };
    let Some(trust_domain) = &policy.trust_domain else {
        let valid = |s: &str| pgrollout_shared::identity::is_valid_segment(s);
        if !valid(claimed_zone) || !valid(claimed_name) {
            return Err(reject(Status::invalid_argument(
                "agent name and zone must be 1-63 of a-z, 0-9, '-', '_', '.'",
            )));
        }
        return Ok(AgentIdentity {
            zone: claimed_zone.to_owned(),
            name: claimed_name.to_owned(),
            certificate: None,
        });
    };
    let peer = certificate
        .map_err(reject)?
        .ok_or_else(|| reject(Status::unauthenticated("no client certificate")))?;
    let Role::Agent { zone, name } = &peer.id.role else {
        return Err(reject(Status::permission_denied(format!(
            "{} is not an agent identity",
            peer.id
        ))));
    };
    if &peer.id.trust_domain != trust_domain {
        return Err(reject(Status::permission_denied(format!(
            "{} is from trust domain {}, this controller serves {trust_domain}",
            peer.id, peer.id.trust_domain
        ))));
    }
    if policy.is_revoked(&peer.id, &peer.serial) {
        return Err(reject(Status::permission_denied(format!(
            "the certificate of agent {zone}/{name} (serial {}) is revoked",
            peer.serial
        ))));
    }
    if peer.expired() {
        return Err(reject(peer.expiry_refusal()));
    }
    if claimed_zone != zone {
        return Err(reject(Status::permission_denied(format!(
            "the certificate binds this agent to zone {zone}, but its Hello claims zone {claimed_zone}; \
             fix `zone` in the agent's config or issue it a certificate for that zone"
        ))));
    }
    Ok(AgentIdentity {
        zone: zone.clone(),
        name: name.clone(),
        certificate: Some(peer),
    })
}
