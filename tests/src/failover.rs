//! Several controllers for one agent (issue 18): the stack's controller is
//! "A"; "B" is another `pgrollout serve` with the same config, certificate
//! and store file but its own listeners, started only once A is dead (one
//! SQLite store has one process at a time). Agents list both addresses.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::stack::PASSWORD_ENV;
use crate::{free_port, Process, Stack};

/// How long a controller or agent may take to be ready.
const READY: Duration = Duration::from_secs(30);

/// Another controller of the stack's store: its config file and addresses.
pub struct OtherController {
    pub config: PathBuf,
    /// `https://127.0.0.1:<port>` of its operators' listener.
    pub operators: String,
    /// `https://127.0.0.1:<port>` of its agents' listener.
    pub agents: String,
}

impl Stack {
    /// Writes the config of another controller over the stack's store, on
    /// fresh ports; it is started by [`Stack::start_controller`].
    pub fn other_controller(&self, name: &str) -> Result<OtherController> {
        let text = std::fs::read_to_string(self.controller_config_path())
            .context("reading the controller config")?;
        let (operators, agents) = (free_port(), free_port());
        let edited: String = text
            .lines()
            .map(|line| {
                if line.starts_with("operators = \"127.0.0.1:") {
                    format!("operators = \"127.0.0.1:{operators}\"")
                } else if line.starts_with("agents = \"127.0.0.1:") {
                    format!("agents = \"127.0.0.1:{agents}\"")
                } else {
                    line.to_owned()
                }
            })
            .map(|line| line + "\n")
            .collect();
        anyhow::ensure!(
            edited.contains(&format!(":{operators}\"")) && edited.contains(&format!(":{agents}\"")),
            "the controller config has no [listen] lines to move:\n{text}"
        );
        let config = self.dir.path().join(format!("controller-{name}.toml"));
        std::fs::write(&config, edited)?;
        let scheme = if self.plaintext { "http" } else { "https" };
        Ok(OtherController {
            config,
            operators: format!("{scheme}://127.0.0.1:{operators}"),
            agents: format!("{scheme}://127.0.0.1:{agents}"),
        })
    }

    /// Sets the zone's agent `controller` key to the list `addresses`; takes
    /// effect when the agent (re)starts.
    pub fn list_controllers(&self, zone: &str, addresses: &[&str]) -> Result<()> {
        let path = &self.zone(zone).agent_config;
        let text = std::fs::read_to_string(path)?;
        let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        let mut replaced = false;
        let edited: String = text
            .lines()
            .map(|line| {
                if line.starts_with("controller = ") {
                    replaced = true;
                    format!("controller = [{}]\n", list.join(", "))
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        anyhow::ensure!(replaced, "agent config has no controller line:\n{text}");
        std::fs::write(path, edited)?;
        Ok(())
    }

    /// Kills the stack's controller with SIGKILL (nothing flushed or
    /// closed) and waits until it has exited.
    pub async fn kill_9_controller(&mut self) -> Result<()> {
        self.controller.kill_9()?;
        self.controller
            .wait_for_exit(READY)
            .await
            .context("the killed controller did not exit")?;
        Ok(())
    }

    /// Starts `other` and makes it the stack's controller: `cli` calls go to
    /// it from now on. Returns once it listens.
    pub async fn start_controller(&mut self, other: &OtherController, name: &str) -> Result<()> {
        self.controller = self.spawn_controller(other, name).await?;
        self.operators = other.operators.clone();
        self.agents_address = other.agents.clone();
        Ok(())
    }

    /// Starts `other` beside the stack's controller (it must have a store of
    /// its own then); returns once it listens.
    pub async fn spawn_controller(&self, other: &OtherController, name: &str) -> Result<Process> {
        let config = other.config.to_string_lossy().to_string();
        let mut args = vec!["serve", "--config", &config];
        if self.plaintext {
            args.push("--dev-plaintext");
        }
        let controller = Process::spawn(&self.bins.controller, args, &[], name)?;
        controller
            .wait_for_line("controller listening", READY)
            .await?;
        Ok(controller)
    }

    /// Starts the zone's agent without waiting for it to connect (its
    /// controllers may all be down): the caller waits for what it expects.
    pub fn spawn_agent(&mut self, zone: &str) -> Result<()> {
        let entry = self.zones.get_mut(zone).context("no such zone")?;
        let password = entry.pg.password().to_owned();
        let agent = Process::spawn(
            &self.bins.agent,
            ["--config", &entry.agent_config.to_string_lossy()],
            &[(PASSWORD_ENV, &password)],
            &format!("agent-{zone}"),
        )?;
        entry.agent = Some(agent);
        Ok(())
    }

    /// A dev agent of its own for `other` (issue 18's tests of several
    /// controllers on one store, each with an agent): the stack's agent
    /// config with its own backup directory and only `other` as its
    /// controller. Returns once it is connected.
    pub async fn spawn_agent_for(&self, other: &OtherController, name: &str) -> Result<Process> {
        let zone = self.zone("dev");
        let text = std::fs::read_to_string(&zone.agent_config)?;
        let backup = self.dir.path().join(format!("backups-{name}"));
        std::fs::create_dir_all(&backup)?;
        let edited: String = text
            .lines()
            .map(|line| {
                if line.starts_with("controller = ") {
                    format!("controller = \"{}\"\n", other.agents)
                } else if line.starts_with("backup_dir = ") {
                    format!("backup_dir = \"{}\"\n", backup.display())
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let path = self.dir.path().join(format!("agent-{name}.toml"));
        std::fs::write(&path, edited)?;
        let agent = Process::spawn(
            &self.bins.agent,
            ["--config", &path.to_string_lossy()],
            &[(PASSWORD_ENV, zone.pg.password())],
            &format!("agent-{name}"),
        )?;
        agent
            .wait_for_line("connected to controller", READY)
            .await?;
        Ok(agent)
    }

    /// The zone's running agent.
    pub fn agent(&self, zone: &str) -> Result<&Process> {
        self.zone(zone)
            .agent
            .as_ref()
            .with_context(|| format!("no agent running in zone {zone}"))
    }
}
