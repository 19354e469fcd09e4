//! `pgrollout serve` started on a hand-written config, for the tests of what
//! a config refuses at start: the listeners and the store come from here, the
//! part under test from the caller.

use anyhow::Result;

use crate::{free_port, Binaries, CommandOutput, TestDir};

/// Runs `serve --dev-plaintext` on a config of free loopback listeners, a
/// store in a new test directory named `name`, and `rest` (TOML tables after
/// `[listen]` and `[store]`). A config that is refused ends the command; the
/// caller asserts the exit code and the message.
pub async fn serve_with(name: &str, rest: &str) -> Result<CommandOutput> {
    let bins = Binaries::locate()?;
    let dir = TestDir::new(name)?;
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\noperators = \"127.0.0.1:{}\"\nagents = \"127.0.0.1:{}\"\n\
             [store]\npath = \"{}\"\n{rest}",
            free_port(),
            free_port(),
            dir.path().join("controller.sqlite").display()
        ),
    )?;
    bins.run_cli(
        [
            "serve",
            "--config",
            &config.to_string_lossy(),
            "--dev-plaintext",
        ],
        &[],
    )
    .await
}
