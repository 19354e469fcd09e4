//! What both sides of pgrollout need and nothing else: the generated wire types,
//! the domain types they convert into (with validation at the edge), layered
//! config loading, W3C trace context, the tracing set-up and the operator
//! exit codes.
//!
//! Neither database access nor SQL parsing lives here: the agent alone talks to
//! databases, and the controller alone parses SQL.

pub mod audit_anchor;
pub mod companion_sql;
pub mod config_loader;
pub mod errors;
pub mod exit_code;
pub mod http_server;
pub mod identity;
pub mod job;
pub mod log_format;
pub mod metrics;
pub mod operations;
pub mod perf_target;
pub mod plan_id;
pub mod process_stats;
pub mod retire;
pub mod routine;
pub mod signing;
pub mod smoke_compact;
pub mod span_accounting;
pub mod telemetry;
pub mod test_reports;
pub mod text;
pub mod tls;
pub mod traceparent;
pub mod watch;

/// Generated protobuf types and gRPC stubs for `pgrollout.v1`.
///
/// Domain code should not pass these around: convert with the `TryFrom`
/// impls in [`routine`] at the edge, where a validation error becomes
/// `Status::invalid_argument` in one place.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("pgrollout.v1");
}

/// The version both binaries report in Hello/Welcome and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
