//! Spans relayed by agents that have no collector in their zone (DESIGN
//! §4.8). Each arrives on the agent's link as an encoded OTLP export
//! request; the controller checks its size, stamps its resources with the
//! identity and zone from the agent's certificate (replacing whatever the
//! agent claimed), and forwards it to its own collector.
//!
//! Nothing here can hold up an agent's link: [`SpanRelay::accept`] only
//! checks sizes and the agent's rate and hands the batch to a bounded queue;
//! a full queue, a batch over the limits or an agent over its rate drops
//! spans, and the drops are counted in a log line every few seconds. A
//! controller without a collector forwards nothing and tells its agents, in
//! the Welcome, not to send any.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use pgrollout_shared::proto::SpanBatch;
use pgrollout_shared::telemetry::{
    self, Destination, TelemetryConfig, RELAY_MAX_BATCH_BYTES as MAX_BATCH_BYTES,
    RELAY_MAX_BATCH_SPANS as MAX_BATCH_SPANS,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Batches waiting for the collector; at most this × [`MAX_BATCH_BYTES`] is
/// ever held.
const QUEUE_BATCHES: usize = 16;
/// Each agent's share of the relay, in encoded bytes: a sustained rate and a
/// burst. One rollout's trace is a few kilobytes.
const AGENT_BYTES_PER_SECOND: f64 = 256.0 * 1024.0;
const AGENT_BURST_BYTES: f64 = 4.0 * 1024.0 * 1024.0;
/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often drops are summed up in the log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Resource attributes the controller sets on relayed spans; an agent's own
/// values for them are removed first.
pub const AGENT_NAME: &str = "pgrollout.agent.name";
pub const AGENT_ZONE: &str = "pgrollout.agent.zone";
pub const AGENT_IDENTITY: &str = "pgrollout.agent.identity";
pub const AGENT_VERIFIED: &str = "pgrollout.agent.verified";
pub const RELAYED_BY: &str = "pgrollout.relayed_by";
const STAMPED_PREFIX: &str = "pgrollout.agent.";

/// Who relayed a batch, as the controller verified it.
#[derive(Clone, Debug)]
pub struct AgentStamp {
    pub name: String,
    pub zone: String,
    /// The SPIFFE id of the agent's certificate; `None` only in
    /// `--dev-plaintext` mode, where name and zone are taken on trust.
    pub identity: Option<String>,
}

/// The controller's end of the span relay.
pub struct SpanRelay {
    queue: Option<mpsc::Sender<Relayed>>,
    rates: Mutex<HashMap<String, TokenBucket>>,
    drops: Arc<Drops>,
}

struct Relayed {
    agent: AgentStamp,
    payload: Vec<u8>,
}

impl SpanRelay {
    /// A relay to the configured collector, or one that forwards nothing.
    /// Inside the runtime: it spawns the forwarding task.
    pub fn start(config: &TelemetryConfig, service_name: &str) -> SpanRelay {
        let collector = match telemetry::destination(config) {
            Destination::Collector(collector) if config.relay => collector,
            _ => return SpanRelay::forwarding_nothing(),
        };
        let channel = match telemetry::collector_channel(&collector) {
            Ok(channel) => channel,
            Err(error) => {
                tracing::error!(error = %error, "relayed spans will be dropped");
                return SpanRelay::forwarding_nothing();
            }
        };
        let (queue, batches) = mpsc::channel(QUEUE_BATCHES);
        let drops = Arc::new(Drops::default());
        tokio::spawn(forward(
            batches,
            TraceServiceClient::new(channel),
            drops.clone(),
            service_name.to_owned(),
        ));
        SpanRelay {
            queue: Some(queue),
            rates: Mutex::default(),
            drops,
        }
    }

    pub fn forwarding_nothing() -> SpanRelay {
        SpanRelay {
            queue: None,
            rates: Mutex::default(),
            drops: Arc::default(),
        }
    }

    /// Whether relayed spans go anywhere (told to agents in the Welcome).
    pub fn forwards(&self) -> bool {
        self.queue.is_some()
    }

    /// Takes one batch from `agent`'s link; never waits. The stamp is built
    /// by the caller from the link's verified certificate (the relay knows
    /// nothing of the registry, so telemetry stays below the engine).
    pub fn accept(&self, agent: AgentStamp, batch: SpanBatch) {
        let Some(queue) = &self.queue else {
            return;
        };
        let claimed_spans = u64::from(batch.span_count);
        let payload = batch.otlp_export_request;
        if payload.len() > MAX_BATCH_BYTES {
            self.drops.add(&self.drops.too_large, claimed_spans);
            return;
        }
        let key = format!("{}/{}", agent.zone, agent.name);
        let allowed = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(TokenBucket::full)
            .take(payload.len() as f64);
        if !allowed {
            self.drops.add(&self.drops.rate_limited, claimed_spans);
            return;
        }
        let relayed = Relayed { agent, payload };
        if queue.try_send(relayed).is_err() {
            self.drops.add(&self.drops.queue_full, claimed_spans);
        }
    }
}

/// Sends queued batches to the collector, one at a time, and reports drops.
async fn forward(
    mut batches: mpsc::Receiver<Relayed>,
    mut client: TraceServiceClient<Channel>,
    drops: Arc<Drops>,
    relayed_by: String,
) {
    let mut report = tokio::time::interval(DROP_REPORT_INTERVAL);
    loop {
        tokio::select! {
            next = batches.recv() => {
                let Some(relayed) = next else { return };
                let (request, spans) = match decode_and_stamp(&relayed.payload, &relayed.agent, &relayed_by) {
                    Ok(stamped) => stamped,
                    Err(reason) => {
                        tracing::warn!(agent = %relayed.agent.name, zone = %relayed.agent.zone, reason, "relayed spans rejected");
                        drops.add(&drops.invalid, 1);
                        continue;
                    }
                };
                let export = tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await;
                match export {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(error = %status.message(), "forwarding relayed spans failed");
                        drops.add(&drops.export_failed, spans);
                    }
                    Err(_) => drops.add(&drops.export_failed, spans),
                }
            }
            _ = report.tick() => drops.report(),
        }
    }
}

/// Decodes an agent's export request, checks its limits and puts the
/// verified agent on every resource. Returns the request and its span count.
pub fn decode_and_stamp(
    payload: &[u8],
    agent: &AgentStamp,
    relayed_by: &str,
) -> Result<(ExportTraceServiceRequest, u64), &'static str> {
    if payload.len() > MAX_BATCH_BYTES {
        return Err("batch over the size limit");
    }
    let mut request =
        ExportTraceServiceRequest::decode(payload).map_err(|_| "not an OTLP export request")?;
    let mut spans = 0usize;
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            spans += scope_spans.spans.len();
            let malformed = scope_spans
                .spans
                .iter()
                .any(|span| span.trace_id.len() != 16 || span.span_id.len() != 8);
            if malformed {
                return Err("a span has a malformed trace or span id");
            }
        }
    }
    if spans > MAX_BATCH_SPANS {
        return Err("batch over the span limit");
    }
    for resource_spans in &mut request.resource_spans {
        let resource = resource_spans
            .resource
            .get_or_insert_with(Resource::default);
        resource
            .attributes
            .retain(|kv| !kv.key.starts_with(STAMPED_PREFIX) && kv.key != RELAYED_BY);
        resource.attributes.extend([
            text(AGENT_NAME, &agent.name),
            text(AGENT_ZONE, &agent.zone),
            flag(AGENT_VERIFIED, agent.identity.is_some()),
            text(RELAYED_BY, relayed_by),
        ]);
        if let Some(identity) = &agent.identity {
            resource.attributes.push(text(AGENT_IDENTITY, identity));
        }
    }
    Ok((request, spans as u64))
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn flag(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

/// Spans dropped since the last report, by reason.
#[derive(Default)]
struct Drops {
    queue_full: AtomicU64,
    too_large: AtomicU64,
    rate_limited: AtomicU64,
    invalid: AtomicU64,
    export_failed: AtomicU64,
}

impl Drops {
    fn add(&self, counter: &AtomicU64, spans: u64) {
        counter.fetch_add(spans.max(1), Ordering::Relaxed);
        pgrollout_shared::metrics::count_dropped_spans("relay", self.reason(counter), spans.max(1));
    }

    /// The metric's `reason` label of one of the counters above.
    fn reason(&self, counter: &AtomicU64) -> &'static str {
        [
            (&self.queue_full, "queue_full"),
            (&self.too_large, "too_large"),
            (&self.rate_limited, "rate_limited"),
            (&self.invalid, "invalid"),
            (&self.export_failed, "export_failed"),
        ]
        .into_iter()
        .find(|(known, _)| std::ptr::eq(*known, counter))
        .map_or("other", |(_, reason)| reason)
    }

    fn report(&self) {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let counts = [
            take(&self.queue_full),
            take(&self.too_large),
            take(&self.rate_limited),
            take(&self.invalid),
            take(&self.export_failed),
        ];
        if counts.iter().any(|&n| n > 0) {
            tracing::warn!(
                queue_full = counts[0],
                too_large = counts[1],
                rate_limited = counts[2],
                invalid_batches = counts[3],
                export_failed = counts[4],
                "relayed spans dropped"
            );
        }
    }
}

/// A byte budget refilled at [`AGENT_BYTES_PER_SECOND`] up to
/// [`AGENT_BURST_BYTES`].
struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn full() -> Self {
        TokenBucket {
            tokens: AGENT_BURST_BYTES,
            refilled_at: Instant::now(),
        }
    }

    fn take(&mut self, bytes: f64) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * AGENT_BYTES_PER_SECOND).min(AGENT_BURST_BYTES);
        self.refilled_at = now;
        if bytes > self.tokens {
            return false;
        }
        self.tokens -= bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(resource: Vec<KeyValue>, spans: usize) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|_| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: "step".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn attribute<'a>(request: &'a ExportTraceServiceRequest, key: &str) -> Vec<&'a AnyValue> {
        request
            .resource_spans
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| &r.attributes)
            .filter(|kv| kv.key == key)
            .filter_map(|kv| kv.value.as_ref())
            .collect()
    }

    fn verified() -> AgentStamp {
        AgentStamp {
            name: "prod-1".into(),
            zone: "prod".into(),
            identity: Some("spiffe://example.org/zone/prod/agent/prod-1".into()),
        }
    }

    #[test]
    fn what_the_agent_claimed_is_replaced_by_its_certificate() {
        let claimed = request(
            vec![
                text(AGENT_NAME, "someone-else"),
                text(AGENT_ZONE, "dev"),
                text("pgrollout.agent.anything", "forged"),
                text("service.name", "pgrollout-agent"),
            ],
            3,
        );
        let (stamped, spans) =
            decode_and_stamp(&claimed, &verified(), "pgrollout-controller").expect("valid");
        assert_eq!(spans, 3);
        let string = |key| {
            attribute(&stamped, key)
                .into_iter()
                .map(|v| format!("{:?}", v.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(string(AGENT_NAME), [r#"Some(StringValue("prod-1"))"#]);
        assert_eq!(string(AGENT_ZONE), [r#"Some(StringValue("prod"))"#]);
        assert_eq!(
            string(AGENT_IDENTITY),
            [r#"Some(StringValue("spiffe://example.org/zone/prod/agent/prod-1"))"#]
        );
        assert_eq!(string(AGENT_VERIFIED), ["Some(BoolValue(true))"]);
        assert!(string("pgrollout.agent.anything").is_empty());
        assert_eq!(string("service.name").len(), 1);
    }

    #[test]
    fn oversized_malformed_and_garbage_batches_are_refused() {
        let agent = verified();
        let too_many = request(Vec::new(), MAX_BATCH_SPANS + 1);
        assert_eq!(
            decode_and_stamp(&too_many, &agent, "c").err(),
            Some("batch over the span limit")
        );
        let huge = vec![0u8; MAX_BATCH_BYTES + 1];
        assert_eq!(
            decode_and_stamp(&huge, &agent, "c").err(),
            Some("batch over the size limit")
        );
        assert!(decode_and_stamp(&[0xff, 0xff, 0xff], &agent, "c").is_err());
        let mut bad_id =
            ExportTraceServiceRequest::decode(&request(Vec::new(), 1)[..]).expect("decodes");
        bad_id.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 3];
        assert_eq!(
            decode_and_stamp(&bad_id.encode_to_vec(), &agent, "c").err(),
            Some("a span has a malformed trace or span id")
        );
    }

    #[test]
    fn an_agent_over_its_rate_is_cut_off_until_the_budget_refills() {
        let mut bucket = TokenBucket::full();
        assert!(bucket.take(AGENT_BURST_BYTES));
        assert!(!bucket.take(AGENT_BYTES_PER_SECOND));
        bucket.refilled_at -= Duration::from_secs(1);
        assert!(bucket.take(AGENT_BYTES_PER_SECOND * 0.9));
    }
}
