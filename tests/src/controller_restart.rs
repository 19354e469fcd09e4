//! Restarting a stack's controller the hard way: `kill -9`, then the same
//! command again over the same store, optionally with an edited config.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::{Process, Stack};

/// How long a restarted controller and its agents may take to be ready.
const READY: Duration = Duration::from_secs(30);

impl Stack {
    /// The controller's config file.
    pub fn controller_config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("controller.toml")
    }

    /// Kills the controller with SIGKILL (nothing is flushed or closed),
    /// rewrites its config with `edit`, starts it again, and waits until it
    /// listens and every running agent has reconnected.
    pub async fn kill_9_and_restart_controller(
        &mut self,
        edit: impl FnOnce(String) -> String,
    ) -> Result<()> {
        let marks: Vec<(String, crate::OutputMark)> = self
            .zones
            .iter()
            .filter_map(|(name, zone)| zone.agent.as_ref().map(|a| (name.clone(), a.mark())))
            .collect();
        self.controller.kill_9()?;
        self.controller
            .wait_for_exit(READY)
            .await
            .context("the killed controller did not exit")?;
        let path = self.controller_config_path();
        let config = std::fs::read_to_string(&path).context("reading the controller config")?;
        std::fs::write(&path, edit(config)).context("writing the controller config")?;
        let config_arg = path.to_string_lossy().to_string();
        let mut args = vec!["serve", "--config", &config_arg];
        if self.plaintext {
            args.push("--dev-plaintext");
        }
        let controller = Process::spawn(&self.bins.controller, args, &[], "controller-restarted")?;
        controller
            .wait_for_line("controller listening", READY)
            .await?;
        self.controller = controller;
        for (name, mark) in marks {
            if let Some(agent) = self.zones.get(&name).and_then(|z| z.agent.as_ref()) {
                agent
                    .wait_for_line_after(mark, "connected to controller", READY)
                    .await
                    .with_context(|| format!("agent of zone {name} did not reconnect"))?;
            }
        }
        Ok(())
    }
}
