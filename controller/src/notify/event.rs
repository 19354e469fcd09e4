//! What a notification says: an event built from the controller's record of
//! a rollout (or from an approval request), and the one-line text every
//! channel shows.

use pgrollout_shared::proto::RolloutStatus;

use crate::store::state;

/// The audit action an emergency rollback is recorded under
/// (`engine/operations.rs`), with the operator's reason in its details.
pub const EMERGENCY_ACTION: &str = "rollback.emergency";

/// How a rollout ended, or that it waits for someone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// The agent vanished mid-job; its ledger decides once it reports.
    Unknown,
    ApprovalNeeded,
    /// A post-deploy watch saw a routine slow down or its calls fail.
    WatchAlert,
    /// A post-deploy watch cannot see (track_functions off, no samples).
    WatchBlind,
    /// A post-deploy watch's open conditions all cleared.
    WatchRecovered,
    /// A drift scan found routines changed outside pgrollout.
    DriftDetected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::ApprovalNeeded => "approval_needed",
            Outcome::WatchAlert => "alert",
            Outcome::WatchBlind => "blind",
            Outcome::WatchRecovered => "recovered",
            Outcome::DriftDetected => "detected",
        }
    }
}

/// A rollout waiting for approval. The gates code calls
/// [`super::Notifier::approval_needed`] with this when a rollout stops at
/// the `approval` gate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovalNeeded {
    pub rollout_id: String,
    /// `deploy`, `rollback`, …
    pub kind: String,
    pub environment: String,
    pub procedure: String,
    /// Who asked for the rollout.
    pub requested_by: String,
    pub plan_id: String,
    pub commit_sha: String,
    pub trace_id: String,
    /// Distinct approvals the environment needs.
    pub approvals_required: u32,
}

/// One thing worth telling people about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `<kind>.<outcome>`, e.g. `deploy.failed`, `approval.needed`.
    pub name: String,
    pub kind: String,
    pub outcome: Outcome,
    pub rollout_id: String,
    pub environment: String,
    pub procedure: String,
    pub actor: String,
    pub state: String,
    /// The rollout's exit code (DESIGN §9); `None` until it has one.
    pub exit_code: Option<i32>,
    pub message: String,
    pub trace_id: String,
    pub plan_id: String,
    pub commit_sha: String,
    /// Emergency actions: an emergency rollback (with the operator's
    /// reason) or a disable (SEED.md's emergency switch).
    pub emergency: bool,
    pub emergency_reason: Option<String>,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: Option<i64>,
    pub approvals_required: Option<u32>,
    /// The post-deploy watch a `watch.*` event is about.
    pub watch_id: Option<String>,
}

/// Longest error message a notification quotes; the rest is in `pgrollout
/// status` and the audit log.
const MAX_MESSAGE_CHARS: usize = 400;

impl Event {
    /// The event for a settled rollout; `None` for rollouts nobody is told
    /// about (smoke tests and history change nothing) and for one still
    /// running. `emergency_details` is the rollout's `rollback.emergency`
    /// audit entry, if any.
    pub fn from_rollout(status: &RolloutStatus, emergency_details: Option<&str>) -> Option<Event> {
        if !matches!(
            status.kind.as_str(),
            "deploy" | "rollback" | "disable" | "enable"
        ) {
            return None;
        }
        let outcome = match status.state.as_str() {
            state::SUCCEEDED | state::ROLLED_BACK => Outcome::Succeeded,
            state::FAILED => Outcome::Failed,
            state::UNKNOWN => Outcome::Unknown,
            _ => return None,
        };
        let emergency_reason = emergency_details.map(reason_of);
        Some(Event {
            name: format!("{}.{}", status.kind, outcome.as_str()),
            kind: status.kind.clone(),
            outcome,
            rollout_id: status.rollout_id.clone(),
            environment: status.environment.clone(),
            procedure: status.label.clone(),
            actor: status.actor.clone(),
            state: status.state.clone(),
            exit_code: status.finished.then_some(status.exit_code),
            message: status.message.clone(),
            trace_id: status.trace_id.clone(),
            plan_id: status.plan_id.clone(),
            commit_sha: status.commit_sha.clone(),
            emergency: emergency_reason.is_some() || status.kind == "disable",
            emergency_reason,
            started_at_unix_ms: status.created_at_unix_ms,
            finished_at_unix_ms: status.finished.then_some(status.finished_at_unix_ms),
            approvals_required: None,
            watch_id: None,
        })
    }

    pub fn approval_needed(request: ApprovalNeeded) -> Event {
        Event {
            name: "approval.needed".to_owned(),
            kind: request.kind,
            outcome: Outcome::ApprovalNeeded,
            rollout_id: request.rollout_id,
            environment: request.environment,
            procedure: request.procedure,
            actor: request.requested_by,
            state: "awaiting_approval".to_owned(),
            exit_code: None,
            message: String::new(),
            trace_id: request.trace_id,
            plan_id: request.plan_id,
            commit_sha: request.commit_sha,
            emergency: false,
            emergency_reason: None,
            started_at_unix_ms: pgrollout_shared::job::now_unix_ms(),
            finished_at_unix_ms: None,
            approvals_required: Some(request.approvals_required),
            watch_id: None,
        }
    }

    /// The line people read, e.g. `✅ Deployed addarc to DEV (by alice,
    /// rollout r-…)`. Plain text: each channel escapes it as it must.
    pub fn text(&self) -> String {
        let env = self.environment.to_uppercase();
        let procedure = &self.procedure;
        let (done, action) = match self.kind.as_str() {
            "deploy" => (
                format!("Deployed {procedure} to {env}"),
                format!("Deploy of {procedure} to {env}"),
            ),
            "rollback" => (
                format!("Rolled back {procedure} in {env}"),
                format!("Rollback of {procedure} in {env}"),
            ),
            "disable" => (
                format!("Disabled {procedure} in {env}"),
                format!("Disable of {procedure} in {env}"),
            ),
            "enable" => (
                format!("Re-enabled {procedure} in {env}"),
                format!("Enable of {procedure} in {env}"),
            ),
            kind => (
                format!("{kind} of {procedure} in {env} succeeded"),
                format!("{kind} of {procedure} in {env}"),
            ),
        };
        let by = format!("(by {}, rollout {})", self.actor, self.rollout_id);
        let reason = self
            .emergency_reason
            .as_deref()
            .map(|r| format!(" — reason: {r}"))
            .unwrap_or_default();
        let emergency = if self.emergency { "EMERGENCY: " } else { "" };
        let message = shorten(&self.message);
        match self.outcome {
            Outcome::Succeeded => {
                let mark = match (self.emergency, self.kind.as_str()) {
                    (true, _) => "🚨",
                    (false, "rollback") => "↩️",
                    _ => "✅",
                };
                format!("{mark} {emergency}{done}{reason} {by}")
            }
            Outcome::Failed => {
                let code = self.exit_code.map(|c| format!(" (exit {c})")).unwrap_or_default();
                format!("❌ {emergency}{action} failed{code}: {message}{reason} {by}")
            }
            Outcome::Unknown => {
                format!("⚠️ {emergency}{action}: outcome unknown: {message} {by}")
            }
            Outcome::ApprovalNeeded => format!(
                "⏳ Approval needed: {} of {procedure} to {env}, requested by {} ({} approval(s) required; rollout {})",
                self.kind,
                self.actor,
                self.approvals_required.unwrap_or(1),
                self.rollout_id
            ),
            Outcome::WatchAlert | Outcome::WatchBlind | Outcome::WatchRecovered => {
                super::watch_event::text(self, &message)
            }
            Outcome::DriftDetected => super::drift_event::text(self),
        }
    }
}

/// The operator's reason from a `rollback.emergency` entry, whose details
/// read `EMERGENCY rollback, reason: <reason>; smoke tests skipped; …`; the
/// whole details when they do not.
fn reason_of(details: &str) -> String {
    details
        .strip_prefix("EMERGENCY rollback, reason: ")
        .and_then(|rest| rest.rsplit_once("; smoke tests skipped"))
        .map(|(reason, _)| reason)
        .unwrap_or(details)
        .to_owned()
}

fn shorten(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(kind: &str, state: &str, exit_code: i32) -> RolloutStatus {
        RolloutStatus {
            rollout_id: "r-1".into(),
            kind: kind.into(),
            environment: "dev".into(),
            actor: "alice".into(),
            state: state.into(),
            exit_code,
            finished: true,
            message: "deploy failed:\n  ERROR 42P01: relation does not exist".into(),
            label: "addarc".into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_kind_and_outcome_reads_as_one_line() {
        let text = |s: &RolloutStatus, emergency: Option<&str>| {
            Event::from_rollout(s, emergency).map(|e| e.text())
        };
        assert_eq!(
            text(&status("deploy", "succeeded", 0), None).as_deref(),
            Some("✅ Deployed addarc to DEV (by alice, rollout r-1)")
        );
        assert_eq!(
            text(&status("deploy", "failed", 2), None).as_deref(),
            Some("❌ Deploy of addarc to DEV failed (exit 2): deploy failed: ERROR 42P01: relation does not exist (by alice, rollout r-1)")
        );
        assert_eq!(
            text(&status("rollback", "succeeded", 0), None).as_deref(),
            Some("↩️ Rolled back addarc in DEV (by alice, rollout r-1)")
        );
        let emergency = "EMERGENCY rollback, reason: pager 4411; smoke tests skipped; no approval asked; job j-1";
        let event = Event::from_rollout(&status("rollback", "succeeded", 0), Some(emergency))
            .expect("event");
        assert!(event.emergency);
        assert_eq!(event.emergency_reason.as_deref(), Some("pager 4411"));
        assert_eq!(
            event.text(),
            "🚨 EMERGENCY: Rolled back addarc in DEV — reason: pager 4411 (by alice, rollout r-1)"
        );
        assert_eq!(
            text(&status("disable", "succeeded", 0), None).as_deref(),
            Some("🚨 EMERGENCY: Disabled addarc in DEV (by alice, rollout r-1)")
        );
        assert_eq!(text(&status("smoke", "succeeded", 0), None), None);
        assert_eq!(text(&status("deploy", "running", 0), None), None);
    }

    #[test]
    fn an_approval_request_names_what_waits_and_for_how_many() {
        let event = Event::approval_needed(ApprovalNeeded {
            rollout_id: "r-9".into(),
            kind: "deploy".into(),
            environment: "prod".into(),
            procedure: "addarc".into(),
            requested_by: "alice".into(),
            approvals_required: 2,
            ..Default::default()
        });
        assert_eq!(event.name, "approval.needed");
        assert_eq!(
            event.text(),
            "⏳ Approval needed: deploy of addarc to PROD, requested by alice (2 approval(s) required; rollout r-9)"
        );
    }
}
