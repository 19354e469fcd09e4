//! Tracing set-up shared by the controller, the CLI and the agent: `tracing`
//! for logs and spans, and an OpenTelemetry OTLP/gRPC exporter for the spans
//! when one is configured (DESIGN §4.7–4.8).
//!
//! Where spans go follows the OpenTelemetry environment variables, which win
//! over the `[telemetry]` table of a config file:
//!
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: no spans leave
//!   the process (an agent relays none either).
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT`,
//!   then `otlp_endpoint`: the collector (OTLP over gRPC).
//! - `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, then
//!   `OTEL_EXPORTER_OTLP_CERTIFICATE`, then `otlp_ca`: the CA of an `https://`
//!   collector.
//! - `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`),
//!   then `service_name`, then the program's default.
//! - `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER*`, `OTEL_EXPORTER_OTLP_HEADERS`,
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_RESOURCE_ATTRIBUTES`: as the SDK reads
//!   them.
//!
//! No collector configured means no exporter and no OpenTelemetry layer at
//! all: spans are then plain `tracing` spans that only the log sees.
//!
//! Only spans reach OpenTelemetry, and only pgrollout's own: log events and
//! other crates' spans are filtered out, so a trace carries exactly the
//! attributes pgrollout's code chose for it — never secrets, never parameter
//! values.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter, SpanLimits};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::log_format::LogFormat;
use crate::span_accounting::CountingProcessor;
use crate::traceparent::TraceParent;

/// Largest batch of relayed spans (an encoded OTLP export request) an agent
/// sends and a controller accepts.
pub const RELAY_MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Most spans one relayed batch may hold.
pub const RELAY_MAX_BATCH_SPANS: usize = 4096;

/// The `[telemetry]` table of the controller's and the agent's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector:4317`. Without
    /// one (and without `OTEL_EXPORTER_OTLP_*ENDPOINT`), no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// PEM CA certificate(s) of an `https://` collector.
    pub otlp_ca: Option<PathBuf>,
    /// `service.name` of this process's spans.
    pub service_name: Option<String>,
    /// Agent: without a collector of its own, relay spans over the
    /// controller link. Controller: forward relayed spans to its collector.
    pub relay: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_ca: None,
            service_name: None,
            relay: true,
        }
    }
}

/// A collector to export to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    pub endpoint: String,
    pub ca: Option<PathBuf>,
}

/// Where this process's spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    Disabled,
    /// Nothing configured: no exporter (an agent may relay instead).
    Unconfigured,
    Collector(Collector),
}

/// Why telemetry could not be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(
        "the OTLP endpoint {endpoint} uses https but no CA is configured; set [telemetry] otlp_ca or \
         OTEL_EXPORTER_OTLP_CERTIFICATE (or use an http:// endpoint)"
    )]
    MissingCa { endpoint: String },
    #[error("cannot read the OTLP CA file {path}")]
    UnreadableCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Decides where spans go from the process environment and `config`.
pub fn destination(config: &TelemetryConfig) -> Destination {
    destination_from(config, |name| std::env::var(name).ok())
}

/// [`destination`] with the environment as a function, for tests.
pub fn destination_from(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Destination {
    let set = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Destination::Disabled;
    }
    if let Some(exporters) = set("OTEL_TRACES_EXPORTER") {
        let names: Vec<String> = exporters
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .collect();
        if names.iter().any(|e| e == "none") {
            return Destination::Disabled;
        }
        if !names.iter().any(|e| e == "otlp") {
            eprintln!(
                "warning: OTEL_TRACES_EXPORTER={exporters}: only otlp is supported; exporting over OTLP"
            );
        }
    }
    for protocol in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = set(protocol).filter(|v| v != "grpc") {
            eprintln!(
                "warning: {protocol}={value}: only grpc is supported; exporting over OTLP/gRPC"
            );
            break;
        }
    }
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .or_else(|| {
            config
                .otlp_endpoint
                .clone()
                .filter(|e| !e.trim().is_empty())
        });
    let Some(endpoint) = endpoint else {
        return Destination::Unconfigured;
    };
    let ca = set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        .or_else(|| set("OTEL_EXPORTER_OTLP_CERTIFICATE"))
        .map(PathBuf::from)
        .or_else(|| config.otlp_ca.clone());
    Destination::Collector(Collector { endpoint, ca })
}

/// A lazily connecting gRPC channel to the collector. Must be called inside
/// a tokio runtime; export failures surface on use, not here.
pub fn collector_channel(
    collector: &Collector,
) -> Result<tonic::transport::Channel, TelemetryError> {
    let invalid = |reason: String| TelemetryError::InvalidEndpoint {
        endpoint: collector.endpoint.clone(),
        reason,
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(collector.endpoint.clone())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    match endpoint.uri().scheme_str() {
        Some("http") => {}
        Some("https") => {
            let ca = collector
                .ca
                .as_ref()
                .ok_or_else(|| TelemetryError::MissingCa {
                    endpoint: collector.endpoint.clone(),
                })?;
            let pem = std::fs::read(ca).map_err(|source| TelemetryError::UnreadableCa {
                path: ca.clone(),
                source,
            })?;
            let host = endpoint.uri().host().unwrap_or_default().to_owned();
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                .domain_name(host.trim_matches(['[', ']']));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid(e.to_string()))?;
        }
        _ => return Err(invalid("use http://host:port or https://host:port".into())),
    }
    Ok(endpoint.connect_lazy())
}

/// The OTLP exporter for `collector`; inside a tokio runtime.
pub fn collector_exporter(
    collector: &Collector,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    use opentelemetry_otlp::WithTonicConfig;
    opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(collector_channel(collector)?)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))
}

/// What [`install`] sets up.
pub struct Setup {
    /// `service.name` unless `OTEL_SERVICE_NAME` or the config says otherwise.
    pub default_service_name: &'static str,
    /// From the config's `[telemetry]` table.
    pub service_name: Option<String>,
    /// The log level when `RUST_LOG` is unset, e.g. `info`.
    pub default_log_filter: &'static str,
    /// More resource attributes, e.g. the agent's configured zone.
    pub resource: Vec<KeyValue>,
    /// The `[log]` table: text or JSON lines.
    pub log: crate::log_format::LogConfig,
}

/// The spans' processor: a batch processor (its own thread, a bounded queue
/// that drops when full; `OTEL_BSP_*` apply) around `exporter`, its drops
/// counted in `pgrollout_spans_dropped_total` (`span_accounting.rs`).
pub fn batch_processor<E: SpanExporter + 'static>(exporter: E) -> CountingProcessor {
    CountingProcessor::new(exporter)
}

/// Events one span may hold before the SDK drops the rest (its default is
/// 128, fewer than a batch's smoke tests). `OTEL_SPAN_EVENT_COUNT_LIMIT`
/// still wins; a span that holds fewer events than it was given says so in
/// its OTLP `dropped_events_count`, and a batch's step span states its
/// smoke test count as `pgrollout.smoke.count` either way (the existence-only
/// ones, which get no event each, as `pgrollout.smoke.existence_only`).
pub const MAX_EVENTS_PER_SPAN: u32 = 10_000;

fn span_limits() -> SpanLimits {
    let events = std::env::var("OTEL_SPAN_EVENT_COUNT_LIMIT")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(MAX_EVENTS_PER_SPAN);
    SpanLimits {
        max_events_per_span: events,
        ..SpanLimits::default()
    }
}

/// The installed OpenTelemetry pipeline; flush it before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static FLUSHING: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber: logs to stderr (filtered by `RUST_LOG`),
/// and, with a processor, pgrollout's spans to OpenTelemetry. Must run inside
/// a tokio runtime when the processor's exporter uses gRPC.
pub fn install(setup: Setup, processor: Option<CountingProcessor>) -> Telemetry {
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(setup.default_log_filter));
    // Colour only on a terminal (a file or a journal gets plain text) and
    // never with NO_COLOR; JSON when the config asks for it.
    let logs: Box<dyn Layer<_> + Send + Sync> = match setup.log.format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(crate::log_format::decorations(
                    std::io::stderr().is_terminal(),
                ))
                .boxed()
        }
        LogFormat::Json => crate::log_format::JsonLayer.boxed(),
    };
    let logs = logs.with_filter(log_filter);
    let provider = processor.map(|processor| {
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_span_limits(span_limits())
            .with_resource(resource(&setup))
            .build()
    });
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("pgrollout"))
            // A span carries only the attributes pgrollout sets: none of
            // tracing's own bookkeeping (busy_ns/idle_ns, code.*, target,
            // thread.*, level), which no backend's conventions know.
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_target(false)
            .with_level(false)
            .with_filter(filter_fn(|metadata| {
                metadata.is_span()
                    && metadata.target().starts_with("pgrollout")
                    && *metadata.level() <= tracing::Level::INFO
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    if let Some(provider) = &provider {
        let _ = PROVIDER.set(provider.clone());
    }
    Telemetry { provider }
}

fn resource(setup: &Setup) -> Resource {
    let from_environment = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
            .any(|pair| pair.trim_start().starts_with("service.name="));
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", crate::VERSION))
        .with_attributes(setup.resource.clone());
    if !from_environment {
        let name = setup
            .service_name
            .clone()
            .unwrap_or_else(|| setup.default_service_name.to_owned());
        builder = builder.with_service_name(name);
    }
    builder.build()
}

impl Telemetry {
    /// Whether spans are exported (by a collector exporter or a relay).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still queued and stops the exporter. Blocks: call it
    /// from `spawn_blocking` inside a runtime (STACK.md pitfall 6).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(10)) {
                eprintln!("warning: spans not all exported at exit: {error}");
            }
        }
    }
}

/// Starts exporting the finished spans now instead of at the batch
/// processor's next tick, on a thread of its own: a rollout's trace is then
/// complete at the collector moments after the rollout ends. At most one
/// flush runs at a time; without an exporter this does nothing.
pub fn flush_soon() {
    let Some(provider) = PROVIDER.get() else {
        return;
    };
    if FLUSHING.swap(true, Ordering::AcqRel) {
        return;
    }
    let provider = provider.clone();
    let spawned = std::thread::Builder::new()
        .name("pgrollout-span-flush".into())
        .spawn(move || {
            let _ = provider.force_flush();
            FLUSHING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        FLUSHING.store(false, Ordering::Release);
    }
}

/// An OpenTelemetry context whose (remote) span is `parent`.
pub fn remote_context(parent: &TraceParent) -> Option<opentelemetry::Context> {
    let trace_id = TraceId::from_hex(&parent.trace_id).ok()?;
    let span_id = SpanId::from_hex(&parent.span_id).ok()?;
    let flags = if parent.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}

/// Makes `span` a child of `parent`, a span of another process. Does nothing
/// when spans are not exported. Call before the span is first entered.
pub fn set_remote_parent(span: &tracing::Span, parent: &TraceParent) {
    if let Some(context) = remote_context(parent) {
        let _ = span.set_parent(context);
    }
}

/// The W3C trace context of `span`, to hand to a child in another process;
/// `None` when spans are not exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    if !span_context.is_valid() {
        return None;
    }
    Some(TraceParent {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
        sampled: span_context.is_sampled(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    fn configured(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(endpoint.into()),
            ..TelemetryConfig::default()
        }
    }

    fn collector(endpoint: &str) -> Destination {
        Destination::Collector(Collector {
            endpoint: endpoint.into(),
            ca: None,
        })
    }

    #[test]
    fn nothing_configured_means_no_exporter() {
        let config = TelemetryConfig::default();
        assert_eq!(
            destination_from(&config, env(&[])),
            Destination::Unconfigured
        );
        assert!(config.relay);
    }

    #[test]
    fn standard_variables_override_the_config() {
        let config = configured("http://from-config:4317");
        assert_eq!(
            destination_from(&config, env(&[])),
            collector("http://from-config:4317")
        );
        assert_eq!(
            destination_from(
                &config,
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317")])
            ),
            collector("http://generic:4317")
        );
        assert_eq!(
            destination_from(
                &config,
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
                ])
            ),
            collector("http://traces:4317")
        );
        for off in [
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_SDK_DISABLED", "true"),
        ] {
            assert_eq!(
                destination_from(&config, env(&[off])),
                Destination::Disabled,
                "{off:?}"
            );
        }
    }

    #[test]
    fn trace_context_round_trips_through_opentelemetry() {
        let parent = TraceParent::new_root();
        let context = remote_context(&parent).expect("a valid traceparent converts");
        let span_ref = context.span();
        let span = span_ref.span_context();
        assert_eq!(span.trace_id().to_string(), parent.trace_id);
        assert_eq!(span.span_id().to_string(), parent.span_id);
        assert!(span.is_remote() && span.is_sampled());
    }

    #[test]
    fn a_child_of_a_remote_parent_continues_its_trace() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let parent = TraceParent::new_root();
        let continued = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rollout");
            set_remote_parent(&span, &parent);
            traceparent_of(&span)
        });
        let continued = continued.expect("a span of an exporting subscriber has a context");
        assert_eq!(continued.trace_id, parent.trace_id);
        assert_ne!(continued.span_id, parent.span_id);
        // Without the OpenTelemetry layer there is no context to hand on.
        let plain = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            traceparent_of(&tracing::info_span!("rollout"))
        });
        assert_eq!(plain, None);
    }
}
