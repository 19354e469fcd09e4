//! Counting the spans the SDK's batch processor would drop silently
//! (issue 21 item 7): it keeps its drop count private and logs only the
//! first drop. [`CountingProcessor`] sits in front of it with the same
//! bound: a span is pending from its end until the exporter receives it, and
//! a span that would exceed the queue is dropped here, where it is counted
//! (`pgrollout_spans_dropped_total{stage="export",reason="queue_full"}`).
//! The batch processor's own queue, never holding more than the pending
//! spans, then never fills. Spans of a batch the collector refused count
//! under `reason="export_failed"`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::metrics::count_dropped_spans;

/// The batch processor's queue size: `OTEL_BSP_MAX_QUEUE_SIZE`, else the
/// SDK's default.
fn queue_size() -> usize {
    std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .filter(|size| *size > 0)
        .unwrap_or(2048)
}

/// A batch processor (`OTEL_BSP_*` apply) whose drops are counted.
#[derive(Debug)]
pub struct CountingProcessor {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
    capacity: usize,
}

impl CountingProcessor {
    pub fn new<E: SpanExporter + 'static>(exporter: E) -> Self {
        let capacity = queue_size();
        let pending = Arc::new(AtomicUsize::new(0));
        let exporter = CountingExporter {
            inner: exporter,
            pending: pending.clone(),
        };
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build();
        CountingProcessor {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(config)
                .build(),
            pending,
            capacity,
        }
    }
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            count_dropped_spans("export", "queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter inside: releases pending spans as batches arrive and counts
/// the spans of failed exports.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.pending.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            count_dropped_spans("export", "export_failed", spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
