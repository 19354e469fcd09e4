//! `pgrollout audit verify`: the store's chain and authentication codes, then
//! the anchors each environment's zone holds (`engine/audit_anchors.rs`). The
//! answer says which zones were checked, which could not be asked, and from
//! which entry on nothing outside the store vouches for the log.

use pgrollout_shared::proto::{AnchorZone, AuditResponse};

use crate::engine::{audit_anchors, Controller};
use crate::store::{AuditEntry, StoreError};

/// At start-up: the chain and codes of the log this controller opens (the
/// zones are not asked: agents connect later). A broken log is logged as an
/// error and recorded, and the controller serves on: refusing to start would
/// let whoever broke the log stop every deploy.
pub async fn check_at_start(controller: &Controller) {
    let verdict = match controller.store.verify_audit_log(Vec::new()).await {
        Ok(verdict) => verdict,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "AUDIT LOG UNREADABLE at start-up");
            return;
        }
    };
    if let Err(broken) = verdict.chain {
        tracing::error!(
            seq = broken.seq,
            problem = %broken.problem,
            "AUDIT LOG BROKEN: the store was edited outside the controller; run `pgrollout audit verify` and investigate"
        );
        controller
            .audit(AuditEntry {
                actor: "controller".into(),
                action: "audit.broken".into(),
                outcome: "failed".into(),
                details: format!("at start-up, entry {}: {}", broken.seq, broken.problem),
                ..Default::default()
            })
            .await;
    }
}

/// Fills the verdict fields of `response`: the whole log, read row by row
/// (constant memory, whatever its length), then the zones' anchors.
pub async fn verify(
    controller: &Controller,
    actor: &str,
    response: &mut AuditResponse,
) -> Result<(), StoreError> {
    let zones = audit_anchors::collect(controller, actor).await;
    let held = controller
        .store
        .verify_audit_log(audit_anchors::anchored_seqs(&zones))
        .await?;
    response.entries_checked = held.entries;
    let verdict = held
        .chain
        .clone()
        .and_then(|()| audit_anchors::check(&held, &zones));
    match verdict {
        Ok(()) => response.chain_intact = true,
        Err(broken) => {
            response.first_broken_seq = broken.seq;
            response.problem = broken.problem;
        }
    }
    for zone in zones {
        let (reachable, detail, anchors) = match zone.anchors {
            Ok(anchors) => (true, String::new(), anchors),
            Err(reason) => (false, reason, Vec::new()),
        };
        let newest = anchors
            .iter()
            .filter_map(|a| a.head.as_ref().map(|h| h.seq))
            .max()
            .unwrap_or(0);
        response.newest_anchor_seq = response.newest_anchor_seq.max(newest);
        response.anchor_zones.push(AnchorZone {
            environment: zone.environments.join(","),
            zone: zone.zone,
            target: zone.target,
            reachable,
            detail,
            anchors_checked: anchors.len() as i64,
            newest_anchor_seq: newest,
        });
    }
    Ok(())
}
