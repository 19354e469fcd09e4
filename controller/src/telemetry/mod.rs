//! Logs and spans of the `pgrollout` binary: the controller (`serve`) and
//! every CLI command. The set-up itself is shared with the agent
//! (`pgrollout_shared::telemetry`); here are the two programs' settings, the
//! spans of a rollout (`spans.rs`) and the relay that forwards agents' spans
//! to the controller's collector (`relay.rs`).

pub mod relay;
pub mod spans;

use std::future::Future;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::telemetry::{
    self, batch_processor, collector_exporter, Destination, Setup, Telemetry, TelemetryConfig,
    TelemetryError,
};
use tracing::Instrument;

/// `service.name` of the controller's spans unless configured otherwise.
pub const CONTROLLER_SERVICE: &str = "pgrollout-controller";
/// `service.name` of the CLI's spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const CLI_SERVICE: &str = "pgrollout-cli";

/// Logs (default level `info`) and, with a collector configured, spans for
/// `pgrollout serve`. Inside the runtime: the exporter's channel needs it.
pub fn start_controller(
    config: &TelemetryConfig,
    log: &pgrollout_shared::log_format::LogConfig,
) -> Result<Telemetry, TelemetryError> {
    let processor = match telemetry::destination(config) {
        Destination::Collector(collector) => Some(batch_processor(collector_exporter(&collector)?)),
        Destination::Disabled | Destination::Unconfigured => None,
    };
    Ok(telemetry::install(
        Setup {
            default_service_name: CONTROLLER_SERVICE,
            service_name: config.service_name.clone(),
            default_log_filter: "info",
            resource: Vec::new(),
            log: log.clone(),
        },
        processor,
    ))
}

/// Whether this CLI process exports its spans (set once, before the command
/// runs): only then may a request name one of its spans as the parent.
static CLI_EXPORTS_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn cli_exports_spans() -> bool {
    CLI_EXPORTS_SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs one CLI command inside its root span, `pgrollout <command>`, whose
/// trace is the one a rollout it starts belongs to; then exports the spans.
/// Only the `OTEL_*` variables configure the CLI: it has no config file.
/// Warnings (an unreachable collector) go to stderr; `RUST_LOG` shows more.
pub async fn traced_command(command: &str, run: impl Future<Output = ExitCode>) -> ExitCode {
    let config = TelemetryConfig::default();
    let processor = match telemetry::destination(&config) {
        Destination::Collector(collector) => match collector_exporter(&collector) {
            Ok(exporter) => Some(batch_processor(exporter)),
            Err(error) => {
                eprintln!("pgrollout: spans are not exported: {error}");
                None
            }
        },
        Destination::Disabled | Destination::Unconfigured => None,
    };
    let installed = telemetry::install(
        Setup {
            default_service_name: CLI_SERVICE,
            service_name: None,
            default_log_filter: "warn",
            resource: Vec::new(),
            log: Default::default(),
        },
        processor,
    );
    CLI_EXPORTS_SPANS.store(
        installed.is_exporting(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let span = spans::command_span(command);
    let code = run.instrument(span.clone()).await;
    spans::record_exit_code(&span, code);
    drop(span);
    stop(installed).await;
    code
}

/// Exports what is queued and stops the exporter, off the async threads.
pub async fn stop(installed: Telemetry) {
    if installed.is_exporting() {
        let _ = tokio::task::spawn_blocking(move || installed.shutdown()).await;
    }
}
