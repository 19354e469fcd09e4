//! The audit chain's anchors in the zones (issue 13). Every job the
//! controller offers carries the chain's head; a job that writes ledger rows
//! records it in them, in the same transaction as its change. `audit verify`
//! asks an agent of each environment's zone (connected to this controller or
//! to another, `delivery::ask`) for the anchors its target's ledger holds
//! and checks the store against them: an anchored entry that is missing or
//! different means the log was truncated, wiped or rewritten —
//! which the entries' own hashes and codes cannot show once the tail is gone.

use std::time::{Duration, SystemTime};

use pgrollout_shared::audit_anchor::AuditHead;
use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{AuditAnchor, Outcome};
use pgrollout_shared::traceparent::TraceParent;

use super::delivery::{self, SideReply};
use super::{new_id, Controller};
use crate::store::{BrokenChain, LogVerdict};

/// How long verify waits for an agent of a zone that is between connections.
const AGENT_WAIT: Duration = Duration::from_secs(2);
/// How long one zone may take to read its anchors.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The head a job carries to its zone; `None` (no anchor) when the log is
/// empty or cannot be read — the job itself is not held up for it.
pub async fn current_head(controller: &Controller) -> Option<AuditHead> {
    match controller.store.audit_head().await {
        Ok(head) => head,
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reading the audit head failed; the job carries no anchor");
            None
        }
    }
}

/// What one environment's zone holds, or why it could not be asked.
#[derive(Debug)]
pub struct ZoneAnchors {
    pub environments: Vec<String>,
    pub zone: String,
    pub target: String,
    pub anchors: Result<Vec<AuditAnchor>, String>,
}

/// Asks an agent of every configured environment's zone (once per zone and
/// target) for the anchors its ledger holds.
pub async fn collect(controller: &Controller, actor: &str) -> Vec<ZoneAnchors> {
    let mut zones: Vec<ZoneAnchors> = Vec::new();
    for (name, environment) in &controller.config.environments {
        let zone = controller
            .config
            .zone_of(name)
            .unwrap_or_else(|| name.clone());
        match zones
            .iter_mut()
            .find(|z| z.zone == zone && z.target == environment.target)
        {
            Some(known) => known.environments.push(name.clone()),
            None => zones.push(ZoneAnchors {
                environments: vec![name.clone()],
                zone,
                target: environment.target.clone(),
                anchors: Err(String::new()),
            }),
        }
    }
    let reads = zones
        .iter()
        .map(|z| read(controller, &z.zone, &z.target, actor));
    let answers = futures_util::future::join_all(reads).await;
    for (zone, anchors) in zones.iter_mut().zip(answers) {
        zone.anchors = anchors;
    }
    zones
}

async fn read(
    controller: &Controller,
    zone: &str,
    target: &str,
    actor: &str,
) -> Result<Vec<AuditAnchor>, String> {
    let job = Job {
        id: new_id("aa"),
        attempt: 1,
        // Reads only: nothing to fence.
        lease: None,
        deadline: SystemTime::now() + READ_TIMEOUT,
        trace: TraceParent::new_root(),
        target: target.to_owned(),
        // Not a rollout: nothing is recorded for it but its verdict.
        rollout_id: "audit-verify".to_owned(),
        plan_id: "audit:anchors".to_owned(),
        actor: actor.to_owned(),
        commit_sha: String::new(),
        label: "audit-anchors".to_owned(),
        backup_retention_days: 0,
        audit_head: None,
        approvals: Default::default(),
        kind: JobKind::AuditAnchors,
    };
    // Here or through the controller holding the agent (issue 18).
    let answered = delivery::ask(
        controller,
        zone,
        target,
        AGENT_WAIT,
        job,
        READ_TIMEOUT + Duration::from_secs(5),
    )
    .await
    .ok_or_else(|| format!("no agent of zone {zone} serving target {target} is connected"))?;
    let agent = answered.agent;
    match answered.reply {
        SideReply::Result(result) if result.outcome() == Outcome::Succeeded => {
            Ok(result.audit_anchors)
        }
        SideReply::Result(result) => Err(format!(
            "agent {agent} could not read its ledger: {}",
            result.message
        )),
        SideReply::Declined(reason) => Err(format!(
            "agent {agent} declined (an agent older than anchors?): {reason}"
        )),
        SideReply::Lost(why) => Err(why),
        SideReply::TimedOut => Err(format!(
            "agent {agent} did not answer within {}s",
            READ_TIMEOUT.as_secs()
        )),
    }
}

/// Checks the store's log against every anchor the zones returned: `held`
/// has the log's last sequence number and the hash of each anchored entry it
/// holds (`Store::verify_audit_log`); names the lowest anchored entry that is
/// missing or differs.
pub fn check(held: &LogVerdict, zones: &[ZoneAnchors]) -> Result<(), BrokenChain> {
    let last = held.last_seq;
    let mut problems: Vec<BrokenChain> = Vec::new();
    for zone in zones {
        let Ok(anchors) = &zone.anchors else { continue };
        for anchor in anchors {
            let Some(head) = &anchor.head else { continue };
            let held_by = format!(
                "zone {}'s ledger (target {}, row #{})",
                zone.zone, zone.target, anchor.ledger_id
            );
            let problem = match held.hashes.get(&head.seq) {
                Some(hash) if *hash == head.hash => continue,
                Some(_) => format!(
                    "entry {} is not the entry {held_by} anchored: the log was rewritten at or before it",
                    head.seq
                ),
                None if head.seq > last => format!(
                    "{held_by} anchors entry {}, but the log ends at entry {last}: entries were deleted (a truncated tail or a wiped log)",
                    head.seq
                ),
                None => format!(
                    "entry {}, which {held_by} anchors, is missing from the log",
                    head.seq
                ),
            };
            problems.push(BrokenChain {
                seq: head.seq,
                problem,
            });
        }
    }
    match problems.into_iter().min_by_key(|p| p.seq) {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// The sequence numbers the zones' anchors name.
pub fn anchored_seqs(zones: &[ZoneAnchors]) -> Vec<i64> {
    zones
        .iter()
        .filter_map(|z| z.anchors.as_ref().ok())
        .flatten()
        .filter_map(|a| a.head.as_ref().map(|h| h.seq))
        .collect()
}
