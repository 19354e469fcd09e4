//! The agent's logs and spans: to the zone's collector when one is
//! configured, else relayed over the controller link (`link::span_relay`),
//! else nowhere (`OTEL_TRACES_EXPORTER=none`, or `relay = false`).

use std::sync::Arc;

use opentelemetry::KeyValue;
use pgrollout_shared::telemetry::{
    self, batch_processor, collector_exporter, Destination, Setup, Telemetry, TelemetryError,
};

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
