//! The `Drift` call (issue 20): a viewer asks what an environment's routines
//! look like live against what the target's ledger last recorded. The scan
//! itself is `engine/drift.rs`; this is the edge: authorise, check the
//! request, keep the scan as the environment's latest (`--cached` shows it
//! without an agent), audit what was found (`drift.scanned`, and
//! `drift.detected` for findings the previous scan did not have).

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{DriftRequest, DriftResponse};
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use super::status::store_failure;
use crate::config::OperatorRole;
use crate::engine::drift;
use crate::store::AuditEntry;

/// The most routine names one scan may be limited to.
const MAX_NAMES: usize = 1_000;

impl ControlService {
    pub(super) async fn drift_scan(
        &self,
        request: Request<DriftRequest>,
    ) -> Result<Response<DriftResponse>, Status> {
        let caller = self
            .authorize(&request, OperatorRole::Viewer, "scan for drift")
            .await?;
        let request = request.into_inner();
        if request.procedures.len() > MAX_NAMES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_NAMES} routine names per drift scan"
            )));
        }
        if let Some(bad) = request
            .procedures
            .iter()
            .find(|n| n.trim().is_empty() || n.len() > 256)
        {
            return Err(Status::invalid_argument(format!(
                "routine name {bad:?} must be 1 to 256 bytes"
            )));
        }
        let mut names = request.procedures.clone();
        names.sort();
        names.dedup();
        let scope = names.join(",");
        if request.cached {
            let stored = self
                .controller
                .store
                .latest_drift_scan(&request.environment, &scope)
                .await
                .map_err(store_failure("read its last drift scan"))?;
            let Some(stored) = stored else {
                return Err(Status::not_found(format!(
                    "no drift scan of {} for {} is recorded yet; run `pgrollout drift {}` while its agent is connected",
                    request.environment,
                    if scope.is_empty() { "all routines" } else { &scope },
                    request.environment
                )));
            };
            let mut response = stored.response;
            response.cached = true;
            response.scanned_at_unix_ms = stored.scanned_at;
            response.new_drift.clear();
            return Ok(Response::new(response));
        }
        let scan = drift::scan(
            &self.controller,
            &request.environment,
            request.procedures.clone(),
            &caller.actor(),
        )
        .await?;
        let mut response = DriftResponse {
            environment: request.environment.clone(),
            zone: scan.zone,
            target: scan.target,
            agent: scan.agent.clone(),
            report: Some(scan.report),
            scanned_at_unix_ms: now_unix_ms(),
            cached: false,
            new_drift: Vec::new(),
        };
        let previous = self
            .controller
            .store
            .record_drift_scan(
                &request.environment,
                &scope,
                &response,
                response.scanned_at_unix_ms,
            )
            .await
            .map_err(store_failure("record the drift scan"))?;
        let known: Vec<String> = previous
            .and_then(|p| p.response.report)
            .map(|r| r.findings.iter().map(finding_key).collect())
            .unwrap_or_default();
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
        self.controller
            .audit(AuditEntry {
                actor: caller.actor(),
                action: "drift.scanned".into(),
                outcome: if drifted.is_empty() { "ok" } else { "drift" }.into(),
                environment: Some(request.environment.clone()),
                procedure: (!scope.is_empty()).then(|| scope.clone()),
                details: format!(
                    "{} routine(s) checked by agent {}; drifted: [{}]",
                    report.routines_checked,
                    scan.agent,
                    drifted.join(", ")
                ),
                ..Default::default()
            })
            .await;
        if !response.new_drift.is_empty() {
            // Drift no earlier scan had seen: its own entry, so an auditor
            // finds when each hand change was first noticed.
            self.controller
                .audit(AuditEntry {
                    actor: caller.actor(),
                    action: "drift.detected".into(),
                    outcome: "drift".into(),
                    environment: Some(request.environment.clone()),
                    procedure: (!scope.is_empty()).then(|| scope.clone()),
                    details: format!("new drift: [{}]", response.new_drift.join(", ")),
                    ..Default::default()
                })
                .await;
        }
        Ok(Response::new(response))
    }
}

/// A finding as the audit and `new_drift` name it: `kind identity`.
fn finding_key(finding: &pgrollout_shared::proto::DriftFinding) -> String {
    format!("{} {}", finding.kind, finding.identity)
}
