//! The agent's logs and spans: to the zone's collector when one is
//! configured, else relayed over the controller link (`link::span_relay`),
//! else nowhere (`OTEL_TRACES_EXPORTER=none`, or `relay = false`). And the
//! agent's Prometheus metrics, served at `/metrics` by `health.rs`.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};

use opentelemetry::KeyValue;
use pgrollout_shared::metrics::{self, duration_family, DurationFamily, Labels};
use pgrollout_shared::proto::Outcome;
use pgrollout_shared::telemetry::{
    self, batch_processor, collector_exporter, Destination, Setup, Telemetry, TelemetryError,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::AgentConfig;
use crate::link::span_relay;
use crate::outbox::Outbox;

/// `service.name` of the agent's spans unless configured otherwise.
pub const AGENT_SERVICE: &str = "pgrollout-agent";

/// Installs logging and span export. Inside the runtime.
pub fn start(config: &AgentConfig, outbox: &Arc<Outbox>) -> Result<Telemetry, TelemetryError> {
    let settings = &config.telemetry;
    let processor = match telemetry::destination(settings) {
        Destination::Collector(collector) => Some(batch_processor(collector_exporter(&collector)?)),
        Destination::Unconfigured if settings.relay => {
            Some(batch_processor(span_relay::start(outbox.clone())))
        }
        Destination::Unconfigured | Destination::Disabled => None,
    };
    Ok(telemetry::install(
        Setup {
            default_service_name: AGENT_SERVICE,
            service_name: settings.service_name.clone(),
            default_log_filter: "info",
            // What this agent says it is; spans relayed through the
            // controller carry what its certificate says instead.
            resource: vec![
                KeyValue::new("pgrollout.agent.name", config.name.clone()),
                KeyValue::new("pgrollout.agent.zone", config.zone.clone()),
            ],
            log: config.log.clone(),
        },
        processor,
    ))
}

/// `pgrollout_agent_step_duration_seconds{step,outcome}`: every finished
/// step's time, from the step events the jobs already emit. Step names are
/// the code's own fixed names; anything else counts as `other`, so the
/// series stay bounded.
fn step_durations() -> &'static DurationFamily {
    static STEPS: OnceLock<DurationFamily> = OnceLock::new();
    STEPS.get_or_init(duration_family)
}

/// `pgrollout_agent_jobs_total{kind,outcome}`: jobs finished since start.
fn jobs_finished() -> &'static Family<Labels, Counter> {
    static JOBS: OnceLock<Family<Labels, Counter>> = OnceLock::new();
    JOBS.get_or_init(Family::default)
}

/// Observes one finished step (skipped steps took no time and are left out).
pub fn observe_step(step: &str, outcome: &'static str, duration_ms: u64) {
    if outcome == "skipped" {
        return;
    }
    let bounded = step.len() <= 40
        && step
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let step = if bounded { step } else { "other" };
    step_durations()
        .get_or_create(&vec![
            ("step", step.to_owned()),
            ("outcome", outcome.to_owned()),
        ])
        .observe(duration_ms as f64 / 1000.0);
}

/// Counts one finished job.
pub fn count_job(kind: &'static str, outcome: Outcome) {
    let outcome = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::ValidationFailed => "validation-failed",
        Outcome::DeployFailed => "deploy-failed",
        Outcome::SmokeFailed => "smoke-failed",
        Outcome::Unspecified => "unspecified",
    };
    jobs_finished()
        .get_or_create(&vec![
            ("kind", kind.to_owned()),
            ("outcome", outcome.to_owned()),
        ])
        .inc();
}

/// The agent's `/metrics` (on its `[health]` listener): steps, jobs, the
/// controller link (which controller, issue 18), dropped spans, build and process.
pub fn render_metrics(outbox: &Outbox) -> String {
    let mut registry = Registry::default();
    registry.register(
        "pgrollout_agent_step_duration_seconds",
        "Finished job steps' durations, by step and outcome",
        step_durations().clone(),
    );
    registry.register(
        "pgrollout_agent_jobs",
        "Jobs finished since the agent started, by kind and outcome",
        jobs_finished().clone(),
    );
    let on = outbox.connected_to();
    let connected = Gauge::<i64, AtomicI64>::default();
    connected.set(i64::from(on.is_some()));
    registry.register(
        "pgrollout_agent_controller_connected",
        "1 while the link to the controller is up",
        connected,
    );
    let controller = Family::<Labels, Gauge<i64, AtomicI64>>::default();
    if let Some(address) = on {
        controller.get_or_create(&vec![("address", address)]).set(1);
    }
    registry.register(
        "pgrollout_agent_controller",
        "1 for the controller address the link is on now; no sample while it is down",
        controller,
    );
    let failovers = Counter::<u64>::default();
    failovers.inc_by(outbox.failovers());
    registry.register(
        "pgrollout_agent_controller_failovers",
        "Sessions since the agent started that began on another controller than the one before",
        failovers,
    );
    metrics::register_spans_dropped(&mut registry);
    metrics::register_build_info(&mut registry, AGENT_SERVICE);
    metrics::register_process(&mut registry);
    metrics::render(&registry)
}
