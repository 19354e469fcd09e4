//! `pgrollout drift` (issue 20): asks an agent of the environment's zone to
//! compare its target's live catalog with the ledger. Like the audit
//! anchors' read, it is not a rollout: no rollout, job or event rows, only
//! an audit entry; the offer travels the watch samples' side channel
//! (`delivery::ask`: here, or through the controller holding the agent) and
//! its answer comes back to this caller alone. Each scan is kept as the
//! environment's latest (`--cached` shows it without an agent) and audited
//! (`drift.scanned`; `drift.detected`, and a notification to the
//! environment's channels, for findings the previous scan did not have),
//! whether an operator asked for it or `drift_schedule.rs` did. An
//! operator's scan is always audited; a scheduled one only when its findings
//! differ from the previous scan's, so a schedule every second does not write
//! 86,400 identical entries a day (its liveness is the
//! `pgrollout_drift_last_scan_timestamp_seconds` metric).

use std::time::{Duration, SystemTime};

use pgrollout_shared::job::{now_unix_ms, Job, JobKind};
use pgrollout_shared::proto::{DriftFinding, DriftReport, DriftResponse, Outcome};
use pgrollout_shared::traceparent::TraceParent;

use super::delivery::{self, SideReply};
use super::error::EngineError;
use super::{new_id, Controller};
use crate::notify::drift_event::{self, DriftNotice};
use crate::store::leases::Fence;
use crate::store::AuditEntry;

/// How long the scan waits for an agent of the zone between connections.
const AGENT_WAIT: Duration = Duration::from_secs(5);
/// How long one scan may take on the agent.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one scan found, and where.
#[derive(Debug)]
pub struct DriftScan {
    pub zone: String,
    pub target: String,
    pub agent: String,
    pub report: DriftReport,
}

/// Who asked for a scan, which decides what of it the audit log keeps.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    /// An operator's `pgrollout drift`: audited every time, as every command is.
    Operator(&'a str),
    /// The controller's schedule: audited when the findings changed; the
    /// scan is recorded under the drift lease's fence (issue 18).
    Schedule(&'a str, &'a Fence),
}

impl<'a> Requester<'a> {
    fn actor(self) -> &'a str {
        match self {
            Requester::Operator(actor) | Requester::Schedule(actor, _) => actor,
        }
    }

    fn fence(self) -> Option<&'a Fence> {
        match self {
            Requester::Operator(_) => None,
            Requester::Schedule(_, fence) => Some(fence),
        }
    }
}

/// Scans `environment` for drift of the routines `names` (sorted, no
/// duplicates; all routines when empty), keeps the scan as the latest for
/// that set of names and audits it; new drift is also notified.
pub async fn scan_and_record(
    controller: &Controller,
    environment: &str,
    names: Vec<String>,
    requester: Requester<'_>,
) -> Result<DriftResponse, EngineError> {
    let actor = requester.actor();
    let scope = names.join(",");
    let scan = scan(controller, environment, names, actor).await?;
    let mut response = DriftResponse {
        environment: environment.to_owned(),
        zone: scan.zone,
        target: scan.target,
        agent: scan.agent.clone(),
        report: Some(scan.report),
        scanned_at_unix_ms: now_unix_ms(),
        cached: false,
        new_drift: Vec::new(),
    };
    let previous = controller
        .store
        .record_drift_scan(
            environment,
            &scope,
            &response,
            response.scanned_at_unix_ms,
            requester.fence(),
        )
        .await
        .map_err(EngineError::store("record the drift scan"))?;
    let known: Option<Vec<String>> = previous.map(|p| {
        p.response
            .report
            .map(|r| r.findings.iter().map(finding_key).collect())
            .unwrap_or_default()
    });
    let first_scan = known.is_none();
    let known = known.unwrap_or_default();
    let report = response.report.clone().unwrap_or_default();
    response.new_drift = report
        .findings
        .iter()
        .map(finding_key)
        .filter(|key| !known.contains(key))
        .collect();
    let drifted: Vec<&str> = report
        .findings
        .iter()
        .map(|f| f.identity.as_str())
        .collect();
    let procedure = (!scope.is_empty()).then(|| scope.clone());
    let findings_changed =
        first_scan || !response.new_drift.is_empty() || known.len() != report.findings.len();
    if matches!(requester, Requester::Operator(_)) || findings_changed {
        controller
            .audit(AuditEntry {
                actor: actor.to_owned(),
                action: "drift.scanned".into(),
                outcome: if drifted.is_empty() { "ok" } else { "drift" }.into(),
                environment: Some(environment.to_owned()),
                procedure: procedure.clone(),
                details: format!(
                    "{} routine(s) checked by agent {}; drifted: [{}]",
                    report.routines_checked,
                    scan.agent,
                    drifted.join(", ")
                ),
                ..Default::default()
            })
            .await;
    }
    if !response.new_drift.is_empty() {
        // Drift no earlier scan had seen: its own entry, so an auditor
        // finds when each hand change was first noticed, and one message to
        // the environment's channels, not one per scan.
        controller
            .audit(AuditEntry {
                actor: actor.to_owned(),
                action: "drift.detected".into(),
                outcome: "drift".into(),
                environment: Some(environment.to_owned()),
                procedure,
                details: format!("new drift: [{}]", response.new_drift.join(", ")),
                ..Default::default()
            })
            .await;
        controller
            .notifier
            .announce(drift_event::event(DriftNotice {
                environment,
                new_drift: &response.new_drift,
                scanned_by: actor,
                scanned_at_unix_ms: response.scanned_at_unix_ms,
            }));
    }
    Ok(response)
}

/// A finding as the audit and `new_drift` name it: `kind identity`.
fn finding_key(finding: &DriftFinding) -> String {
    format!("{} {}", finding.kind, finding.identity)
}

/// Scans `environment` for drift of the routines `names` (all when empty).
async fn scan(
    controller: &Controller,
    environment: &str,
    names: Vec<String>,
    actor: &str,
) -> Result<DriftScan, EngineError> {
    let Some(settings) = controller.config.environments.get(environment) else {
        let known: Vec<&str> = controller
            .config
            .environments
            .keys()
            .map(String::as_str)
            .collect();
        return Err(EngineError::Invalid(format!(
            "unknown environment {environment:?}; known environments: {}",
            known.join(", ")
        )));
    };
    let target = settings.target.clone();
    let zone = controller
        .config
        .zone_of(environment)
        .unwrap_or_else(|| environment.to_owned());
    let job = Job {
        id: new_id("drift"),
        attempt: 1,
        // Reads only: nothing to fence.
        lease: None,
        deadline: SystemTime::now() + SCAN_TIMEOUT,
        trace: TraceParent::new_root(),
        target: target.clone(),
        rollout_id: "drift".to_owned(),
        plan_id: "drift:scan".to_owned(),
        actor: actor.to_owned(),
        commit_sha: String::new(),
        label: "drift".to_owned(),
        backup_retention_days: 0,
        audit_head: None,
        approvals: Default::default(),
        kind: JobKind::Drift { names },
    };
    // Here or through the controller holding the agent (issue 18).
    let answered = delivery::ask(
        controller,
        &zone,
        &target,
        AGENT_WAIT,
        job,
        SCAN_TIMEOUT + Duration::from_secs(5),
    )
    .await
    .ok_or_else(|| {
        EngineError::Unavailable(format!(
            "no agent of zone {zone} serving target {target} is connected; nothing was scanned \
             (`pgrollout drift {environment} --cached` shows the last recorded scan)"
        ))
    })?;
    let agent = answered.agent;
    let report = match answered.reply {
        SideReply::Result(result) if result.outcome() == Outcome::Succeeded => {
            result.drift.unwrap_or_default()
        }
        SideReply::Result(result) => {
            return Err(EngineError::Internal(format!(
                "agent {agent} could not scan for drift: {}",
                result.message
            )))
        }
        SideReply::Declined(reason) => {
            return Err(EngineError::Unavailable(format!(
                "agent {agent} declined the drift scan (an agent older than drift detection?): {reason}"
            )))
        }
        SideReply::Lost(why) => {
            return Err(EngineError::Unavailable(format!(
                "{why}; nothing was scanned"
            )))
        }
        SideReply::TimedOut => {
            return Err(EngineError::Unavailable(format!(
                "agent {agent} did not answer the drift scan within {}s",
                SCAN_TIMEOUT.as_secs()
            )))
        }
    };
    Ok(DriftScan {
        zone,
        target,
        agent,
        report,
    })
}
