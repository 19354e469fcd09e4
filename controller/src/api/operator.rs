//! The operators' service (`Control`) as every file of it shares it: the
//! controller it serves and the one authorisation step, which audits a
//! refusal. `control.rs`, `operations.rs`, `probes.rs`, `faults.rs`,
//! `metrics.rs` and `watches.rs` implement its calls on top of this file.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::auth::{authenticate_operator, peer_certificate, Caller};
use crate::config::OperatorRole;
use crate::engine::Controller;
use crate::store::AuditEntry;

pub struct ControlService {
    pub controller: Arc<Controller>,
}

impl ControlService {
    /// Authenticates the caller and checks the role, auditing a refusal.
    pub(super) async fn authorize<T>(
        &self,
        request: &Request<T>,
        role: OperatorRole,
        to: &str,
    ) -> Result<Caller, Status> {
        let result = authenticate_operator(request, &self.controller.policy())
            .and_then(|caller| caller.require(role, to).map(|()| caller));
        if let Err(status) = &result {
            let actor = peer_certificate(request)
                .ok()
                .flatten()
                .map(|p| p.id.display_name())
                .unwrap_or_else(|| "unauthenticated".into());
            self.controller
                .audit(AuditEntry {
                    actor,
                    action: "auth.denied".into(),
                    outcome: "refused".into(),
                    details: format!("{to}: {}", status.message()),
                    ..Default::default()
                })
                .await;
        }
        result
    }
}
