//! Anchors of the controller's audit chain held outside the controller: each
//! job that writes ledger rows carries the chain's head (sequence number and
//! hash of the newest entry) and the agent records it in those rows, so a
//! store rewritten or truncated after the fact no longer matches what the
//! zones hold (issue 13).

use crate::proto;
use crate::routine::InvalidField;

/// An audit entry's place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// The entry's sequence number (from 1).
    pub seq: i64,
    /// Its hex SHA-256, which chains over every entry before it.
    pub hash: String,
}

impl TryFrom<proto::AuditHead> for AuditHead {
    type Error = InvalidField;

    fn try_from(wire: proto::AuditHead) -> Result<Self, Self::Error> {
        let invalid = |reason: &str| InvalidField {
            field: "audit_head".into(),
            reason: reason.into(),
        };
        if wire.seq < 1 {
            return Err(invalid("seq counts from 1"));
        }
        if wire.hash.len() != 64 || !wire.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("hash must be 64 hex digits"));
        }
        Ok(AuditHead {
            seq: wire.seq,
            hash: wire.hash,
        })
    }
}

impl From<AuditHead> for proto::AuditHead {
    fn from(head: AuditHead) -> Self {
        proto::AuditHead {
            seq: head.seq,
            hash: head.hash,
        }
    }
}
