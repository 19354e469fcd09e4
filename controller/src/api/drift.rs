//! The `Drift` call (issue 20): a viewer asks what an environment's routines
//! look like live against what the target's ledger last recorded. This is
//! the edge: authorise, check the request, read the last scan for
//! `--cached`; the scan, keeping it and auditing it are `engine/drift.rs`.

use pgrollout_shared::proto::{DriftRequest, DriftResponse};
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use super::status::store_failure;
use crate::config::OperatorRole;
use crate::engine::drift;

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
        let response = drift::scan_and_record(
            &self.controller,
            &request.environment,
            names,
            drift::Requester::Operator(&caller.actor()),
        )
        .await?;
        Ok(Response::new(response))
    }
}
