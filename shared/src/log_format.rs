//! How the services write their logs (issue 21): the `[log]` table of the
//! controller's and the agent's config, and the one-object-per-line JSON
//! format a log shipper parses. Also the one rule for decorations (issue 16):
//! colour and emoji only on a terminal, never when `NO_COLOR` is set or the
//! terminal is `dumb`.

use std::io::Write;

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `[log]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (the default) or `json`.
    pub format: LogFormat,
}

/// How each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`,
    /// `fields`, `spans`.
    Json,
}

/// Whether output to a stream may carry colour or emoji: only when it is a
/// terminal, `NO_COLOR` is unset or empty (no-color.org) and `TERM` is not
/// `dumb`.
pub fn decorations(stream_is_terminal: bool) -> bool {
    decorations_with(
        stream_is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

fn decorations_with(
    terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// The JSON log layer: each event becomes one line on stderr.
pub struct JsonLayer;

/// The fields of a span, kept in its extensions for the events inside it.
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.values));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(map)) = extensions.get_mut::<SpanFields>() {
            let mut fields = Fields::default();
            values.record(&mut fields);
            map.extend(fields.values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans: Vec<Value> = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let mut object = Map::new();
                        object.insert("name".into(), span.name().into());
                        if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                            object.extend(map.clone());
                        }
                        Value::Object(object)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metadata = event.metadata();
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": metadata.level().as_str().to_ascii_lowercase(),
            "target": metadata.target(),
            "message": fields.message.unwrap_or_default(),
            "fields": fields.values,
            "spans": spans,
        });
        // One write per line, so lines of concurrent events never interleave.
        let mut text = line.to_string();
        text.push('\n');
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// An event's or span's fields as JSON values; `message` kept apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Map<String, Value>,
}

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else {
            self.values.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // `{:#}`-like: the whole chain, as the text logs show it.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        self.insert(field, Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn decorations_only_on_a_terminal_without_no_color_or_a_dumb_term() {
        assert!(decorations_with(true, None, Some(OsStr::new("xterm"))));
        assert!(decorations_with(true, Some(OsStr::new("")), None));
        assert!(!decorations_with(false, None, None));
        assert!(!decorations_with(true, Some(OsStr::new("1")), None));
        assert!(!decorations_with(true, None, Some(OsStr::new("dumb"))));
    }

    #[test]
    fn the_log_table_takes_text_or_json_and_names_nothing_else() {
        let config: LogConfig = toml_like("json");
        assert_eq!(config.format, LogFormat::Json);
        assert_eq!(LogConfig::default().format, LogFormat::Text);
    }

    fn toml_like(format: &str) -> LogConfig {
        serde_json::from_value(serde_json::json!({ "format": format })).expect("valid")
    }
}
