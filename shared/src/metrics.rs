//! What both programs' `/metrics` share (issue 21 item 7): the exposition
//! through `prometheus-client` (the Prometheus project's Rust client, text
//! format 0.0.4), the duration buckets, `pgrollout_build_info`, the process
//! metrics every Prometheus client library exports, and the count of spans
//! that never reached a collector.
//!
//! Each scrape builds a fresh [`Registry`]: figures computed from a store or
//! read from `/proc` are registered with their current values, and the
//! long-lived histograms and counters (which observe events as they happen)
//! are registered by handle (`prometheus-client` metrics are shared handles).

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of every duration histogram: from a 5 ms step
/// to a half-hour batch, so `histogram_quantile` has resolution at both ends.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

/// Label pairs of one series. Owned strings: values come from the store or
/// from events, and a family's series set is bounded by the caller.
pub type Labels = Vec<(&'static str, String)>;

/// A family of duration histograms with [`DURATION_BUCKETS`].
pub type DurationFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A new, empty [`DurationFamily`].
pub fn duration_family() -> DurationFamily {
    Family::new_with_constructor(duration_histogram)
}

/// One histogram with [`DURATION_BUCKETS`].
pub fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A gauge of floating-point values.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a metric's labels, and an empty scrape is then the honest answer.
    if let Err(error) = prometheus_text::encode(&mut text, registry) {
        tracing::error!(%error, "metrics: encoding failed");
    }
    text
}

/// `pgrollout_build_info{program, version} 1`: which build answers, the
/// join key dashboards use to label everything else with the version. A
/// gauge, as in the Prometheus client libraries (the text format 0.0.4 has
/// no `info` type).
pub fn register_build_info(registry: &mut Registry, program: &str) {
    let family = Family::<Labels, Gauge>::default();
    family
        .get_or_create(&vec![
            ("program", program.to_owned()),
            ("version", crate::VERSION.to_owned()),
        ])
        .set(1);
    registry.register(
        "pgrollout_build_info",
        "Always 1; labelled with the program and its version",
        family,
    );
}

/// Spans dropped before reaching a collector, by where and why
/// (`pgrollout_spans_dropped_total`). Process-wide: the span pipeline is.
pub fn spans_dropped() -> &'static Family<Labels, Counter> {
    static DROPPED: OnceLock<Family<Labels, Counter>> = OnceLock::new();
    DROPPED.get_or_init(Family::default)
}

/// Counts `spans` dropped at `stage` for `reason`; both are fixed names.
pub fn count_dropped_spans(stage: &'static str, reason: &'static str, spans: u64) {
    spans_dropped()
        .get_or_create(&vec![
            ("stage", stage.to_owned()),
            ("reason", reason.to_owned()),
        ])
        .inc_by(spans);
}

/// Registers [`spans_dropped`], with the export stage's series present at
/// 0 from the start (an absent series hides the first drop from `rate()`).
pub fn register_spans_dropped(registry: &mut Registry) {
    for reason in ["queue_full", "export_failed"] {
        count_dropped_spans("export", reason, 0);
    }
    registry.register(
        "pgrollout_spans_dropped",
        "Spans dropped before reaching a collector, by stage and reason",
        spans_dropped().clone(),
    );
}

/// The standard process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
/// read from `/proc/self` now. Elsewhere than Linux, or when `/proc` is not
/// mounted, the ones that cannot be read are left out.
pub fn register_process(registry: &mut Registry) {
    let process = crate::process_stats::read();
    if let Some(seconds) = process.cpu_seconds {
        let counter = Counter::<f64, AtomicU64>::default();
        counter.inc_by(seconds);
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            counter,
        );
    }
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            process.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            process.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            process.max_fds,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            process.start_time_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            let gauge = FloatGauge::default();
            gauge.set(value);
            registry.register(name, help, gauge);
        }
    }
}
