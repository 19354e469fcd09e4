//! Who is on the other end of a connection, as the certificate says it:
//! SPIFFE-style URIs in the certificate's subject alternative names.
//!
//! - `spiffe://<trust-domain>/zone/<zone>/agent/<name>` — an agent, bound to one zone
//! - `spiffe://<trust-domain>/operator/<name>` — an operator (roles come from the controller's config)
//! - `spiffe://<trust-domain>/controller/<name>` — a controller

use std::fmt;

/// What kind of peer a certificate identifies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Agent { zone: String, name: String },
    Operator { name: String },
    Controller { name: String },
}

/// A parsed SPIFFE identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub role: Role,
}

/// Why a URI is not a pgrollout identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{uri:?} is not a pgrollout identity: {reason}")]
pub struct InvalidIdentity {
    pub uri: String,
    pub reason: String,
}

/// Names, zones and trust domains: 1–63 of `a-z 0-9 - _ .`, so they are safe
/// in URIs, file names and log fields alike.
pub fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 63
        && segment.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

impl SpiffeId {
    pub fn agent(trust_domain: &str, zone: &str, name: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.to_owned(),
            role: Role::Agent {
                zone: zone.to_owned(),
                name: name.to_owned(),
            },
        }
    }

    pub fn operator(trust_domain: &str, name: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.to_owned(),
            role: Role::Operator {
                name: name.to_owned(),
            },
        }
    }

    pub fn controller(trust_domain: &str, name: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.to_owned(),
            role: Role::Controller {
                name: name.to_owned(),
            },
        }
    }

    /// Parses `spiffe://…`; every segment must satisfy [`is_valid_segment`].
    pub fn parse(uri: &str) -> Result<Self, InvalidIdentity> {
        let invalid = |reason: &str| InvalidIdentity {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| invalid("it does not start with spiffe://"))?;
        let segments: Vec<&str> = rest.split('/').collect();
        if !segments.iter().all(|s| is_valid_segment(s)) {
            return Err(invalid("segments must be 1-63 of a-z, 0-9, '-', '_', '.'"));
        }
        let trust_domain = segments[0].to_owned();
        let role =
            match segments[1..] {
                ["zone", zone, "agent", name] => Role::Agent {
                    zone: zone.to_owned(),
                    name: name.to_owned(),
                },
                ["operator", name] => Role::Operator {
                    name: name.to_owned(),
                },
                ["controller", name] => Role::Controller {
                    name: name.to_owned(),
                },
                _ => return Err(invalid(
                    "expected /zone/<zone>/agent/<name>, /operator/<name> or /controller/<name>",
                )),
            };
        Ok(SpiffeId { trust_domain, role })
    }

    /// A short name for logs and the audit trail: `agent dev/dev-1`,
    /// `operator alice`, `controller main`.
    pub fn display_name(&self) -> String {
        match &self.role {
            Role::Agent { zone, name } => format!("agent {zone}/{name}"),
            Role::Operator { name } => format!("operator {name}"),
            Role::Controller { name } => format!("controller {name}"),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let td = &self.trust_domain;
        match &self.role {
            Role::Agent { zone, name } => write!(f, "spiffe://{td}/zone/{zone}/agent/{name}"),
            Role::Operator { name } => write!(f, "spiffe://{td}/operator/{name}"),
            Role::Controller { name } => write!(f, "spiffe://{td}/controller/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        for id in [
            SpiffeId::agent("example.org", "prod", "prod-1"),
            SpiffeId::operator("example.org", "alice"),
            SpiffeId::controller("example.org", "main"),
        ] {
            assert_eq!(SpiffeId::parse(&id.to_string()), Ok(id));
        }
        assert_eq!(
            SpiffeId::agent("td", "dev", "a").to_string(),
            "spiffe://td/zone/dev/agent/a"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "https://td/operator/alice",
            "spiffe://td/operator/Alice",
            "spiffe://td/zone/prod/agent",
            "spiffe://td/zone/prod/agent/a/extra",
            "spiffe://td/operator/",
            "spiffe://td/admin/alice",
            "spiffe://td/operator/a%2fb",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
