//! What a post-deploy watch tells the environment's channels: an alert (a
//! routine got slower than its pre-deploy baseline by the threshold, or its
//! calls started failing), that it cannot see (track_functions off, samples
//! failing), or that everything it flagged cleared.

use super::event::{Event, Outcome};

/// What happened to the watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchChange {
    Alert,
    Blind,
    Recovered,
}

/// The watch and what it says.
pub struct WatchNotice<'a> {
    pub change: WatchChange,
    pub watch_id: &'a str,
    pub environment: &'a str,
    pub procedure: &'a str,
    /// Who created the watch.
    pub created_by: &'a str,
    /// The watch's reason, one sentence per open condition.
    pub reason: &'a str,
    pub created_at_unix_ms: i64,
}

/// The event for `notice`, named `watch.alert`, `watch.blind` or
/// `watch.recovered`.
pub fn event(notice: WatchNotice<'_>) -> Event {
    let outcome = match notice.change {
        WatchChange::Alert => Outcome::WatchAlert,
        WatchChange::Blind => Outcome::WatchBlind,
        WatchChange::Recovered => Outcome::WatchRecovered,
    };
    Event {
        name: format!("watch.{}", outcome.as_str()),
        kind: "watch".to_owned(),
        outcome,
        rollout_id: String::new(),
        environment: notice.environment.to_owned(),
        procedure: notice.procedure.to_owned(),
        actor: notice.created_by.to_owned(),
        state: match notice.change {
            WatchChange::Alert => "alerting",
            WatchChange::Blind => "blind",
            WatchChange::Recovered => "watching",
        }
        .to_owned(),
        exit_code: None,
        message: notice.reason.to_owned(),
        trace_id: String::new(),
        plan_id: String::new(),
        commit_sha: String::new(),
        emergency: false,
        emergency_reason: None,
        started_at_unix_ms: notice.created_at_unix_ms,
        finished_at_unix_ms: None,
        approvals_required: None,
        watch_id: Some(notice.watch_id.to_owned()),
    }
}

/// The line people read; `message` is the event's message, shortened.
pub fn text(event: &Event, message: &str) -> String {
    let env = event.environment.to_uppercase();
    let procedure = &event.procedure;
    let watch = event.watch_id.as_deref().unwrap_or_default();
    match event.outcome {
        Outcome::WatchAlert => {
            format!("🔔 Watch alert: {procedure} in {env}: {message} (watch {watch})")
        }
        Outcome::WatchBlind => {
            format!("⚠️ Watch of {procedure} in {env} cannot see: {message} (watch {watch})")
        }
        _ => format!("✅ Watch of {procedure} in {env} recovered: {message} (watch {watch})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_names_the_procedure_environment_reason_and_watch() {
        let alert = event(WatchNotice {
            change: WatchChange::Alert,
            watch_id: "w-1",
            environment: "prod",
            procedure: "addarc",
            created_by: "alice",
            reason: "public.addarc(text) takes 52.1 ms per call",
            created_at_unix_ms: 0,
        });
        assert_eq!(alert.name, "watch.alert");
        assert_eq!(
            alert.text(),
            "🔔 Watch alert: addarc in PROD: public.addarc(text) takes 52.1 ms per call (watch w-1)"
        );
        let body = crate::notify::webhook::payload(&alert);
        assert_eq!(body["watch_id"], "w-1");
        assert_eq!(body["event"], "watch.alert");
        let recovered = event(WatchNotice {
            change: WatchChange::Recovered,
            ..WatchNotice {
                change: WatchChange::Alert,
                watch_id: "w-1",
                environment: "prod",
                procedure: "addarc",
                created_by: "alice",
                reason: "slow public.addarc(text) is clear (was: public.addarc(text) takes 52.1 ms per call)",
                created_at_unix_ms: 0,
            }
        });
        assert_eq!(recovered.name, "watch.recovered");
        assert_eq!(
            recovered.text(),
            "✅ Watch of addarc in PROD recovered: slow public.addarc(text) is clear (was: public.addarc(text) takes 52.1 ms per call) (watch w-1)"
        );
    }
}
