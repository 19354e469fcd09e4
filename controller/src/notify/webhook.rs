//! The generic webhook body: the event as one flat JSON object, for
//! receivers that route or store events themselves.

use serde_json::{json, Value};

use super::event::Event;

pub fn payload(event: &Event) -> Value {
    json!({
        "event_id": event_id(event),
        "event": event.name,
        "kind": event.kind,
        "outcome": event.outcome.as_str(),
        "rollout_id": event.rollout_id,
        "environment": event.environment,
        "procedure": event.procedure,
        "actor": event.actor,
        "state": event.state,
        "exit_code": event.exit_code,
        "message": event.message,
        "trace_id": event.trace_id,
        "plan_id": event.plan_id,
        "commit_sha": event.commit_sha,
        "emergency": event.emergency,
        "emergency_reason": event.emergency_reason,
        "approvals_required": event.approvals_required,
        "watch_id": event.watch_id,
        "started_at_unix_ms": event.started_at_unix_ms,
        "started_at": rfc3339(event.started_at_unix_ms),
        "finished_at_unix_ms": event.finished_at_unix_ms,
        "text": event.text(),
    })
}

/// The same for the same event however often it is sent (retries, a
/// restarted controller notifying again): what it is about and when it ended.
pub fn event_id(event: &Event) -> String {
    use sha2::{Digest, Sha256};
    let key = format!(
        "{}|{}|{}|{}|{}|{:?}",
        event.name,
        event.rollout_id,
        // Events of no rollout (drift scans) differ by environment.
        event.environment,
        event.watch_id.as_deref().unwrap_or_default(),
        event.started_at_unix_ms,
        event.finished_at_unix_ms
    );
    format!("evt-{}", &hex::encode(Sha256::digest(key.as_bytes()))[..32])
}

/// `2025-11-13T14:30:00.000Z`: what machines parse.
fn rfc3339(unix_ms: i64) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::RolloutStatus;

    #[test]
    fn the_body_carries_what_a_receiver_routes_on() {
        let status = RolloutStatus {
            rollout_id: "r-1".into(),
            kind: "rollback".into(),
            environment: "prod".into(),
            actor: "alice".into(),
            state: "succeeded".into(),
            finished: true,
            created_at_unix_ms: 1_763_044_200_000,
            label: "addarc".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            ..Default::default()
        };
        let details = "EMERGENCY rollback, reason: pager 4411; smoke tests skipped; job j-1";
        let event = Event::from_rollout(&status, Some(details)).expect("event");
        let body = payload(&event);
        for (key, expected) in [
            ("event", json!("rollback.succeeded")),
            ("outcome", json!("succeeded")),
            ("rollout_id", json!("r-1")),
            ("environment", json!("prod")),
            ("procedure", json!("addarc")),
            ("actor", json!("alice")),
            ("exit_code", json!(0)),
            ("trace_id", json!("4bf92f3577b34da6a3ce929d0e0e4736")),
            ("emergency", json!(true)),
            ("emergency_reason", json!("pager 4411")),
            ("started_at", json!("2025-11-13T14:30:00.000Z")),
        ] {
            assert_eq!(body[key], expected, "{key}");
        }
        let id = body["event_id"].as_str().expect("an event id");
        assert!(id.starts_with("evt-") && id.len() == 36, "{id}");
        assert_eq!(payload(&event)["event_id"], body["event_id"], "stable");
    }
}
