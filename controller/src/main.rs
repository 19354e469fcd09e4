//! `pgrollout`: the controller (`pgrollout serve`) and the operator CLI in one
//! binary. See ARCHITECTURE.md for the map of this crate.

mod api;
mod auth;
mod ca;
mod cli;
mod config;
mod engine;
mod metrics;
mod notify;
mod plan;
mod project;
mod store;
mod telemetry;

fn main() -> std::process::ExitCode {
    let code = cli::run();
    std::process::ExitCode::from(code.code() as u8)
}
