//! `pgrollout`: the controller (`pgrollout serve`) and the operator CLI in one
//! binary. See ARCHITECTURE.md for the map of this crate.

mod api;
mod auth;
mod ca;
mod cli;
mod config;
mod domain;
mod engine;
mod metrics;
mod notify;
mod plan;
mod project;
mod store;
mod telemetry;

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    let code = cli::run();
    // The CLI's parse cache is written off the critical path (issue 15).
    project::parse_cache::wait_for_writes();
    std::process::ExitCode::from(code.code() as u8)
}

/// `pgrollout audit | head -1`: once the reader has gone, Rust's `print!`
/// panics ("failed printing to stdout: Broken pipe") where a Unix tool stops
/// quietly. Resetting SIGPIPE would take `unsafe`, which this workspace
/// forbids, and routing 140 print sites through a fallible writer buys
/// nothing more, so a panic of exactly that kind ends the process at once,
/// silently and with success: the reader asked for no more.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}
