//! The relay of this agent's spans over its controller link, for a zone
//! without a collector of its own (DESIGN §4.8).
//!
//! The batch span processor hands finished spans to [`RelayExporter`] on its
//! own thread; the exporter encodes them as OTLP export requests and puts
//! them on a bounded queue without waiting. A task drains the queue at a
//! bounded rate onto the link with `send_now`: spans are best-effort, never
//! kept for replay, and never slow a job down. Whatever does not fit — a
//! full queue, a lost link, a controller that forwards nothing — is dropped
//! and counted in a log line.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use pgrollout_shared::proto::{agent_message, AgentMessage, SpanBatch};
use pgrollout_shared::telemetry::{RELAY_MAX_BATCH_BYTES, RELAY_MAX_BATCH_SPANS};
use prost::Message;
use tokio::sync::mpsc;

use crate::outbox::Outbox;

/// Spans per relayed batch: a few kilobytes each, well under the limits.
const SPANS_PER_BATCH: usize = 128;
/// Batches waiting for the link; past this, new spans are dropped.
const QUEUE_BATCHES: usize = 32;
/// The relay's pace: spans per second, with a burst of one full queue.
const SPANS_PER_SECOND: f64 = 1_000.0;
const BURST_SPANS: f64 = (QUEUE_BATCHES * SPANS_PER_BATCH) as f64;
/// How often drops are summed up in the log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Whether the controller of the current session forwards relayed spans
/// (its Welcome says so); until one does, nothing is relayed.
static CONTROLLER_FORWARDS: AtomicBool = AtomicBool::new(false);

/// Records what the controller's Welcome said about relayed spans.
pub fn controller_forwards(forwards: bool) {
    CONTROLLER_FORWARDS.store(forwards, Ordering::Relaxed);
}

/// Starts the task that sends relayed spans on the link, and returns the
/// exporter that feeds it. Inside the runtime.
pub fn start(outbox: Arc<Outbox>) -> RelayExporter {
    let (queue, batches) = mpsc::channel(QUEUE_BATCHES);
    let drops = Arc::new(Drops::default());
    tokio::spawn(drain(batches, outbox, drops.clone()));
    RelayExporter {
        queue,
        drops,
        resource: ResourceAttributesWithSchema::default(),
    }
}

/// One encoded export request and how many spans it holds.
struct Encoded {
    request: Vec<u8>,
    spans: usize,
}

/// The span exporter that relays through the controller.
pub struct RelayExporter {
    queue: mpsc::Sender<Encoded>,
    drops: Arc<Drops>,
    resource: ResourceAttributesWithSchema,
}

impl fmt::Debug for RelayExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayExporter").finish_non_exhaustive()
    }
}

impl SpanExporter for RelayExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if !CONTROLLER_FORWARDS.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut spans = batch.into_iter().peekable();
        while spans.peek().is_some() {
            let chunk: Vec<SpanData> = spans.by_ref().take(SPANS_PER_BATCH).collect();
            let count = chunk.len();
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(chunk, &self.resource),
            }
            .encode_to_vec();
            if request.len() > RELAY_MAX_BATCH_BYTES || count > RELAY_MAX_BATCH_SPANS {
                self.drops.add(&self.drops.too_large, count);
                continue;
            }
            if self
                .queue
                .try_send(Encoded {
                    request,
                    spans: count,
                })
                .is_err()
            {
                self.drops.add(&self.drops.queue_full, count);
            }
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

/// Sends queued batches at the relay's pace; reports drops now and then.
async fn drain(mut batches: mpsc::Receiver<Encoded>, outbox: Arc<Outbox>, drops: Arc<Drops>) {
    let mut pace = Pace::new();
    let mut report = tokio::time::interval(DROP_REPORT_INTERVAL);
    loop {
        tokio::select! {
            next = batches.recv() => {
                let Some(encoded) = next else { return };
                // Waiting here lets the queue fill, and a full queue drops:
                // the rate is bounded and nothing upstream ever waits.
                tokio::time::sleep(pace.wait_for(encoded.spans as f64)).await;
                let message = AgentMessage {
                    body: Some(agent_message::Body::Spans(SpanBatch {
                        otlp_export_request: encoded.request,
                        span_count: u32::try_from(encoded.spans).unwrap_or(u32::MAX),
                    })),
                };
                if !outbox.send_now(message) {
                    drops.add(&drops.link_down, encoded.spans);
                }
            }
            _ = report.tick() => drops.report(),
        }
    }
}

/// Spans dropped since the last report, by reason.
#[derive(Default)]
struct Drops {
    queue_full: AtomicU64,
    too_large: AtomicU64,
    link_down: AtomicU64,
}

impl Drops {
    fn add(&self, counter: &AtomicU64, spans: usize) {
        counter.fetch_add(spans as u64, Ordering::Relaxed);
        pgrollout_shared::metrics::count_dropped_spans("relay", self.reason(counter), spans as u64);
    }

    /// The metric's `reason` label of one of the counters above.
    fn reason(&self, counter: &AtomicU64) -> &'static str {
        [
            (&self.queue_full, "queue_full"),
            (&self.too_large, "too_large"),
            (&self.link_down, "link_down"),
        ]
        .into_iter()
        .find(|(known, _)| std::ptr::eq(*known, counter))
        .map_or("other", |(_, reason)| reason)
    }

    fn report(&self) {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let (queue_full, too_large, link_down) = (
            take(&self.queue_full),
            take(&self.too_large),
            take(&self.link_down),
        );
        if queue_full + too_large + link_down > 0 {
            tracing::warn!(queue_full, too_large, link_down, "relayed spans dropped");
        }
    }
}

/// A token bucket of spans: how long to wait before sending `spans` more.
struct Pace {
    tokens: f64,
    refilled_at: Instant,
}

impl Pace {
    fn new() -> Self {
        Pace {
            tokens: BURST_SPANS,
            refilled_at: Instant::now(),
        }
    }

    fn wait_for(&mut self, spans: f64) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * SPANS_PER_SECOND).min(BURST_SPANS);
        self.refilled_at = now;
        self.tokens -= spans;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / SPANS_PER_SECOND)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_allows_a_burst_then_the_rate() {
        let mut pace = Pace::new();
        assert_eq!(pace.wait_for(BURST_SPANS), Duration::ZERO);
        let wait = pace.wait_for(SPANS_PER_SECOND / 2.0);
        assert!(
            wait > Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
}
