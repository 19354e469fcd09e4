//! The `Drift` call (issue 20): a viewer asks what an environment's routines
//! look like live against what the target's ledger last recorded. The scan
//! itself is `engine/drift.rs`; this is the edge: authorise, check the
//! request, audit what was found (`drift.scanned`), map errors once.

use pgrollout_shared::proto::{DriftRequest, DriftResponse};
use tonic::{Request, Response, Status};

use super::operator::ControlService;
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
        let scan = drift::scan(
            &self.controller,
            &request.environment,
            request.procedures.clone(),
            &caller.actor(),
        )
        .await?;
        let drifted: Vec<&str> = scan
            .report
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
                procedure: (!request.procedures.is_empty()).then(|| request.procedures.join(",")),
                details: format!(
                    "{} routine(s) checked by agent {}; drifted: [{}]",
                    scan.report.routines_checked,
                    scan.agent,
                    drifted.join(", ")
                ),
                ..Default::default()
            })
            .await;
        Ok(Response::new(DriftResponse {
            environment: request.environment,
            zone: scan.zone,
            target: scan.target,
            agent: scan.agent,
            report: Some(scan.report),
        }))
    }
}
