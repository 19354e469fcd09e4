//! The Slack incoming-webhook body: `text` (what notifications and older
//! clients show), `blocks` (the same line, then the event, trace and plan
//! as context) and SEED.md's `status`. `channel` carries the environment's
//! `notification_channel` for webhooks that allow overriding it.

use serde_json::{json, Value};

use super::event::Event;

pub fn payload(event: &Event, channel: Option<&str>) -> Value {
    let text = escape(&event.text());
    let mut context = vec![format!("event `{}`", event.name)];
    if !event.trace_id.is_empty() {
        context.push(format!("trace `{}`", escape(&event.trace_id)));
    }
    if !event.plan_id.is_empty() {
        let plan = &event.plan_id[..event.plan_id.len().min(12)];
        context.push(format!("plan `{}`", escape(plan)));
    }
    let mut body = json!({
        "text": text,
        // As SEED.md's script sends it; Slack ignores what it does not use.
        "status": event.outcome.as_str(),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": context.join(" · ") } ] }
        ]
    });
    if let Some(channel) = channel {
        body["channel"] = Value::String(channel.to_owned());
    }
    body
}

/// Slack reads `&`, `<` and `>` as markup (links, mentions): escaped as its
/// documentation asks, so an error message cannot ping `<!channel>`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::RolloutStatus;

    #[test]
    fn text_is_escaped_and_the_channel_is_set_when_configured() {
        let status = RolloutStatus {
            rollout_id: "r-1".into(),
            kind: "deploy".into(),
            environment: "dev".into(),
            actor: "alice".into(),
            state: "failed".into(),
            exit_code: 2,
            finished: true,
            message: "boom <!channel> & more".into(),
            label: "addarc".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            ..Default::default()
        };
        let event = Event::from_rollout(&status, None).expect("event");
        let body = payload(&event, Some("#dev-deploys"));
        assert_eq!(
            body["text"],
            "❌ Deploy of addarc to DEV failed (exit 2): boom &lt;!channel&gt; &amp; more (by alice, rollout r-1)"
        );
        assert_eq!(body["channel"], "#dev-deploys");
        assert_eq!(body["status"], "failed");
        assert_eq!(body["blocks"][0]["text"]["text"], body["text"]);
        assert_eq!(
            body["blocks"][1]["elements"][0]["text"],
            "event `deploy.failed` · trace `4bf92f3577b34da6a3ce929d0e0e4736`"
        );
        assert!(payload(&event, None).get("channel").is_none());
    }
}
