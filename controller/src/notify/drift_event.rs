//! What a drift scan tells the environment's channels (issue 20): routines
//! changed, dropped, renamed or created outside pgrollout that no earlier
//! scan had seen. Sent once per new finding, whoever ran the scan (an
//! operator's `pgrollout drift` or the environment's `drift_scan_interval`).

use super::event::{Event, Outcome};

/// The most findings the one-line text names; the rest are counted.
const NAMED: usize = 5;

/// A scan's new findings.
pub struct DriftNotice<'a> {
    pub environment: &'a str,
    /// `kind identity`, e.g. `changed public.f(integer)`.
    pub new_drift: &'a [String],
    /// Who ran the scan: an operator, or the controller's schedule.
    pub scanned_by: &'a str,
    pub scanned_at_unix_ms: i64,
}

/// The event for `notice`, named `drift.detected`.
pub fn event(notice: DriftNotice<'_>) -> Event {
    Event {
        name: "drift.detected".to_owned(),
        kind: "drift".to_owned(),
        outcome: Outcome::DriftDetected,
        rollout_id: String::new(),
        environment: notice.environment.to_owned(),
        procedure: String::new(),
        actor: notice.scanned_by.to_owned(),
        state: "drift".to_owned(),
        exit_code: None,
        message: notice.new_drift.join(", "),
        trace_id: String::new(),
        plan_id: String::new(),
        commit_sha: String::new(),
        emergency: false,
        emergency_reason: None,
        started_at_unix_ms: notice.scanned_at_unix_ms,
        finished_at_unix_ms: None,
        approvals_required: None,
        watch_id: None,
    }
}

/// The line people read, e.g. `⚠️ Drift in PROD: changed
/// public.f(integer) — changed outside pgrollout (pgrollout drift prod)`.
pub fn text(event: &Event) -> String {
    let findings: Vec<&str> = event
        .message
        .split(", ")
        .filter(|f| !f.is_empty())
        .collect();
    let mut named = findings
        .iter()
        .take(NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if findings.len() > NAMED {
        named.push_str(&format!(" and {} more", findings.len() - NAMED));
    }
    format!(
        "⚠️ Drift in {}: {named} — changed outside pgrollout (`pgrollout drift {}`; scanned by {})",
        event.environment.to_uppercase(),
        event.environment,
        event.actor
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_findings_and_counts_the_rest() {
        let findings: Vec<String> = (0..7).map(|i| format!("changed public.f{i}()")).collect();
        let event = event(DriftNotice {
            environment: "prod",
            new_drift: &findings,
            scanned_by: "controller (drift_scan_interval)",
            scanned_at_unix_ms: 1,
        });
        assert_eq!(event.name, "drift.detected");
        assert_eq!(
            event.text(),
            "⚠️ Drift in PROD: changed public.f0(), changed public.f1(), changed public.f2(), \
             changed public.f3(), changed public.f4() and 2 more — changed outside pgrollout \
             (`pgrollout drift prod`; scanned by controller (drift_scan_interval))"
        );
    }
}
