//! The integration-test harness of pgrollout: real PostgreSQL clusters, the real binaries, real faults.
//!
//! Scenario files under `tests/tests/` use it like this:
//!
//! ```no_run
//! use std::time::Duration;
//! use pgrollout_tests::{Binaries, PgCluster, Process};
//!
//! # async fn scenario() -> anyhow::Result<()> {
//! let pg = PgCluster::start("dev").await?; // throwaway cluster, its own temp dir and free port
//! pg.execute_sql("create schema app").await?;
//! let client = pg.connect().await?;
//! client.simple_query("select 1").await?;
//!
//! let bins = Binaries::locate()?; // target/<profile>/pgrollout and pgrollout-agent
//! let agent = Process::spawn(&bins.agent, ["--config", "agent.toml"], &[("PGROLLOUT_ZONE", "dev")], "agent-dev")?;
//! agent.wait_for_line("connected to controller", Duration::from_secs(20)).await?;
//! let out = bins.run_cli(["status"], &[]).await?;
//! assert_eq!(out.code, 0, "{out}");
//! # Ok(())
//! # }
//! ```
//!
//! Everything a test creates lives in a [`TestDir`] that is removed when the test passes and kept, with its
//! path printed, when the test panics. Child processes never inherit `PGROLLOUT_*` or `OTEL_*` variables
//! from the developer's shell: a test says what it sets. The harness itself reads these variables:
//!
//! - `PGROLLOUT_TEST_KEEP=1`: keep every test directory, passing tests included.
//! - `PGROLLOUT_TEST_ECHO=1`: echo each [`Process`]'s output lines to stderr as they arrive.
//! - `PGROLLOUT_TEST_PG_DIR=<dir>`: where clusters' directories go (default: `/dev/shm` when it has room,
//!   else the temp dir).
//! - `PGROLLOUT_TEST_PG_BIN=<dir>`: the PostgreSQL server's bin directory (`initdb`, `pg_ctl`, `postgres`;
//!   default: the distribution's, see `pg_binaries`), e.g. `/opt/pgrollout-pg/13/bin`.
//! - `PGROLLOUT_TEST_BIN_DIR=<dir>`: where [`Binaries::locate`] looks (default: beside the test executable).
//!
//! When the tests run as root (as CI does), PostgreSQL's programs run as the `postgres` OS user, which owns the
//! clusters' directories; see the `os_user` module.

mod binaries;
mod controller_restart;
pub mod failover;
pub mod fleet;
pub mod hostile_controller;
pub mod http_get;
mod openssl_ca;
mod os_user;
pub mod otlp_receiver;
mod pg_binaries;
mod pg_cluster;
mod pg_template;
mod ports;
mod process;
pub mod proxy;
pub mod scripted_agent;
mod serve_config;
pub mod stack;
pub mod stall;
mod test_dir;
pub mod three_controllers;
pub mod webhook_endpoint;
mod windows;

pub use binaries::{run_command, Binaries, CommandOutput, CLI_TIMEOUT};
pub use openssl_ca::OpensslCa;
pub use pg_binaries::pg_bin_dir;
pub use pg_cluster::{connect, PgCluster};
pub use ports::free_port;
pub use process::{OutputMark, Process};
pub use serve_config::serve_with;
pub use stack::{Stack, StackOptions, Zone};
pub use test_dir::TestDir;
pub use windows::window_from_now;

/// Re-exported so scenario files use exactly the client version the harness connects with.
pub use tokio_postgres;

/// Removes the `PGROLLOUT_*` (and OpenTelemetry's `OTEL_*`) variables a child would inherit, so only what the
/// test sets reaches it.
fn clear_inherited_pgrollout_env(command: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("PGROLLOUT_") || key_text.starts_with("OTEL_") {
            command.env_remove(key);
        }
    }
}
