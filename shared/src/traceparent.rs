//! W3C trace context (`traceparent`) values, carried inside each JobOffer so
//! that one rollout is one trace from the CLI to the SQL steps.

use std::collections::HashMap;
use std::fmt;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// A parsed `traceparent` header: version 00, trace id, parent span id, flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, never all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, never all zero.
    pub span_id: String,
    /// Whether the trace is sampled (flag bit 0).
    pub sampled: bool,
}

impl TraceParent {
    /// Starts a new trace with a random trace id and root span id.
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: random_hex(16),
            span_id: random_hex(8),
            sampled: true,
        }
    }

    /// The same trace with a new span id: the context handed to a child step.
    pub fn child(&self) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: random_hex(8),
            sampled: self.sampled,
        }
    }

    /// Parses a W3C `traceparent` with OpenTelemetry's propagator (version
    /// 00, or a later version in 00's layout as the W3C spec asks); `None`
    /// for anything it refuses.
    pub fn parse(value: &str) -> Option<Self> {
        // Hand-written guard, one reason: the propagator parses ids with
        // `from_str_radix`, which takes fewer digits than W3C's fixed widths.
        let mut parts = value.trim().split('-');
        let widths_ok = parts.next().is_some_and(|v| v.len() == 2)
            && parts.next().is_some_and(|t| is_lower_hex(t, 32))
            && parts.next().is_some_and(|s| is_lower_hex(s, 16))
            && parts.next().is_some_and(|f| is_lower_hex(f, 2));
        if !widths_ok {
            return None;
        }
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.trim().to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let span = context.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return None;
        }
        Some(TraceParent {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
            sampled: span_context.is_sampled(),
        })
    }
}

/// The header (and carrier key) the propagator reads.
const TRACEPARENT: &str = "traceparent";

fn is_lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = if self.sampled { "01" } else { "00" };
        write!(f, "00-{}-{}-{}", self.trace_id, self.span_id, flags)
    }
}

fn random_hex(bytes: usize) -> String {
    loop {
        let value: String = (0..bytes)
            .map(|_| format!("{:02x}", fastrand::u8(..)))
            .collect();
        if value.bytes().any(|b| b != b'0') {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed_values() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root.clone()));
        assert_eq!(root.child().trace_id, root.trace_id);
        assert_ne!(root.child().span_id, root.span_id);
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version in version 00's layout is read, as W3C asks.
        let later = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            later.map(|p| p.span_id),
            Some("00f067aa0ba902b7".to_owned())
        );
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
    }
}
