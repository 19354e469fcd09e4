//! Verifying a job's signed statements against the agent's policy: each
//! certificate chains to the operator CA and is not revoked, each signature
//! is the certificate's over the statement's bytes, each statement binds
//! this job (action, plan id, environment, zone, target, request) and has not
//! expired; then the rule: a requester, enough distinct approvers who are
//! not the requester — or, for an emergency, one admin with a reason.

use std::collections::BTreeSet;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::policy::{normalize_serial, ApprovalPolicy};
use super::{role, Statement};
use crate::identity::Role;
use crate::proto;

/// What a job claims, as the agent sees it (the plan id recomputed by the
/// agent from the routines it received, never the offer's).
#[derive(Clone, Debug)]
pub struct Claims<'a> {
    pub action: &'a str,
    pub subject: &'a str,
    /// What the statements must name: this agent's zone and the job's
    /// target — or, for a fleet's job, `*` and `fleet:<hash>` (`fleet.rs`).
    pub zone: &'a str,
    pub target: &'a str,
    /// The target the job runs on, whose `required_approvers` apply.
    pub rule_target: &'a str,
    pub request_id: &'a str,
    /// Break-glass: one admin's signature with a reason suffices.
    pub emergency: bool,
    /// A job that runs a signed plan's SQL in a transaction it rolls back
    /// (the syntax gate's check, a perf probe): its requester's signature of
    /// the plan suffices; approvers' are verified if present, not required.
    pub requester_only: bool,
}

/// Who signed for a job that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approved {
    pub requester: Option<String>,
    pub approvers: Vec<String>,
    pub admin: Option<String>,
}

impl std::fmt::Display for Approved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.admin, &self.requester) {
            (Some(admin), _) => write!(f, "emergency action signed by admin {admin}"),
            (None, requester) => write!(
                f,
                "requested by {} and approved by {}",
                requester.as_deref().unwrap_or("?"),
                if self.approvers.is_empty() {
                    "nobody (none required)".to_owned()
                } else {
                    self.approvers.join(", ")
                }
            ),
        }
    }
}

/// Why a job is refused: a sentence for the operator and the audit log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused by the agent's approval policy: {0}")]
pub struct Refusal(pub String);

/// One statement that verified.
struct Signed {
    signer: String,
    statement: Statement,
}

/// Checks every statement and the policy's rule. Any statement that does not
/// verify refuses the job (a controller that adds junk is not trusted to
/// have left the rest alone).
pub fn verify(
    policy: &ApprovalPolicy,
    claims: &Claims<'_>,
    signed: &[proto::SignedStatement],
    now: SystemTime,
) -> Result<Approved, Refusal> {
    if signed.is_empty() {
        return Err(Refusal(format!(
            "the {} job carries no signed statements; this agent runs only changes its operators signed",
            claims.action
        )));
    }
    let revoked = policy.revocations().map_err(Refusal)?;
    let anchors = policy
        .operator_ca
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Refusal(format!("operator CA unusable: {e}")))?;
    let now_ms = crate::job::unix_ms(now);
    let unix_now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let mut verified = Vec::with_capacity(signed.len());
    for (index, item) in signed.iter().enumerate() {
        let n = index + 1;
        let der = CertificateDer::from(item.certificate.as_slice());
        let info = crate::tls::inspect(&der)
            .map_err(|e| Refusal(format!("signature {n}: unreadable certificate ({e})")))?;
        let name = match info.spiffe.as_ref().map(|id| &id.role) {
            Some(Role::Operator { name }) => name.clone(),
            _ => {
                return Err(Refusal(format!(
                    "signature {n}: the certificate is not an operator's ({})",
                    info.subject
                )))
            }
        };
        let cert = EndEntityCert::try_from(&der)
            .map_err(|e| Refusal(format!("signature {n} ({name}): certificate: {e}")))?;
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            unix_now,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| {
            Refusal(format!(
                "signature {n} ({name}): the certificate is not one the operator CA issued and in force ({e})"
            ))
        })?;
        if revoked.names.contains(&name)
            || revoked
                .serials
                .contains(&normalize_serial(&info.serial_hex))
        {
            return Err(Refusal(format!(
                "signature {n}: operator {name}'s certificate (serial {}) is revoked",
                info.serial_hex
            )));
        }
        let good = webpki::ALL_VERIFICATION_ALGS.iter().any(|alg| {
            cert.verify_signature(*alg, &item.statement, &item.signature)
                .is_ok()
        });
        if !good {
            return Err(Refusal(format!(
                "signature {n} ({name}): the signature does not match the statement (forged or altered)"
            )));
        }
        let statement = Statement::decode(&item.statement)
            .map_err(|e| Refusal(format!("signature {n} ({name}): {e}")))?;
        bind(&statement, claims, policy, now_ms)
            .map_err(|why| Refusal(format!("signature {n} ({name}): {why}")))?;
        verified.push(Signed {
            signer: name,
            statement,
        });
    }
    rule(policy, claims, &verified)
}

/// The statement is about this job, now.
fn bind(
    statement: &Statement,
    claims: &Claims<'_>,
    policy: &ApprovalPolicy,
    now_ms: i64,
) -> Result<(), String> {
    let checks: [(&str, &str, &str); 6] = [
        ("action", &statement.action, claims.action),
        ("plan id", &statement.plan_id, claims.subject),
        (
            "environment",
            &statement.environment,
            &policy.config.environment,
        ),
        ("zone", &statement.zone, claims.zone),
        ("target", &statement.target, claims.target),
        ("request", &statement.request_id, claims.request_id),
    ];
    for (what, signed, job) in checks {
        if signed != job {
            return Err(format!(
                "signed for {what} {signed:?}, but this job's is {job:?}"
            ));
        }
    }
    if statement.expires_unix_ms <= now_ms {
        return Err(format!(
            "expired {} s ago",
            (now_ms - statement.expires_unix_ms) / 1000
        ));
    }
    Ok(())
}

fn rule(
    policy: &ApprovalPolicy,
    claims: &Claims<'_>,
    verified: &[Signed],
) -> Result<Approved, Refusal> {
    let config = &policy.config;
    if claims.emergency && config.emergency_requires_admin {
        return verified
            .iter()
            .find(|s| {
                s.statement.role == role::ADMIN
                    && config.admins.contains(&s.signer)
                    && !s.statement.reason.trim().is_empty()
            })
            .map(|s| Approved {
                requester: None,
                approvers: Vec::new(),
                admin: Some(s.signer.clone()),
            })
            .ok_or_else(|| {
                Refusal(
                    "an emergency action needs the signature of an admin ([approvals] admins) with a reason"
                        .into(),
                )
            });
    }
    let requesters: BTreeSet<&str> = verified
        .iter()
        .filter(|s| s.statement.role == role::REQUESTER)
        .map(|s| s.signer.as_str())
        .collect();
    let requester = match requesters.len() {
        1 => requesters.iter().next().map(|r| r.to_string()),
        0 => return Err(Refusal("no requester signed this change".into())),
        _ => {
            return Err(Refusal(format!(
                "several requesters signed one request ({})",
                requesters.into_iter().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    if claims.requester_only {
        return Ok(Approved {
            requester,
            approvers: Vec::new(),
            admin: None,
        });
    }
    let approvers: BTreeSet<&str> = verified
        .iter()
        .filter(|s| s.statement.role == role::APPROVER)
        .map(|s| s.signer.as_str())
        .filter(|signer| Some(*signer) != requester.as_deref())
        .filter(|signer| config.approvers.iter().any(|a| a == signer))
        .collect();
    // A deploy needs its target's approvers; an operation (rollback,
    // disable, enable, adopt) the policy's `operation_approvers`.
    let required = if claims.action == super::action::DEPLOY {
        policy.required_for(claims.rule_target)
    } else {
        config.operation_approvers
    };
    if approvers.len() < required {
        let others: Vec<&str> = verified
            .iter()
            .filter(|s| s.statement.role == role::APPROVER)
            .map(|s| s.signer.as_str())
            .filter(|s| !approvers.contains(s))
            .collect();
        let note = if others.is_empty() {
            String::new()
        } else {
            format!(
                " (not counted: {} — the requester, or not in [approvals] approvers)",
                others.join(", ")
            )
        };
        return Err(Refusal(format!(
            "target {} needs {required} distinct approver(s) other than the requester, {} signed{note}",
            claims.rule_target,
            approvers.len()
        )));
    }
    Ok(Approved {
        requester,
        approvers: approvers.into_iter().map(str::to_owned).collect(),
        admin: None,
    })
}
