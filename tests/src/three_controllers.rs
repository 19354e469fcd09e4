//! Three controllers on one PostgreSQL store (issue 18): the stack's own
//! controller is "A"; "B" and "C" are more `pgrollout serve` processes over
//! the same store, each on listeners of its own. What the fault tests of
//! several controllers share: starting B and C, putting an agent on the
//! controllers it lists, and counting audit entries.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::failover::OtherController;
use crate::{Process, Stack};

/// How long an agent may take to connect, or its journal to empty.
const CONNECT: Duration = Duration::from_secs(30);

impl Stack {
    /// Starts controllers B and C on the stack's store (A is the stack's).
    pub async fn start_b_and_c(&self) -> Result<[(OtherController, Process); 2]> {
        let b = self.other_controller("b")?;
        let c = self.other_controller("c")?;
        let b_process = self.spawn_controller(&b, "controller-b").await?;
        let c_process = self.spawn_controller(&c, "controller-c").await?;
        Ok([(b, b_process), (c, c_process)])
    }

    /// (Re)starts `zone`'s agent listing `controllers` (agents' addresses,
    /// in order) and waits until it is connected to the first of them.
    pub async fn agent_listing(&mut self, zone: &str, controllers: &[&str]) -> Result<()> {
        self.list_controllers(zone, controllers)?;
        if self.zone(zone).agent.is_some() {
            self.kill_agent(zone).await?;
        }
        self.start_agent(zone).await?;
        let connected = self
            .agent(zone)?
            .wait_for_line("connected to controller", CONNECT)
            .await?;
        ensure!(
            connected.contains(controllers[0]),
            "the agent of {zone} is not on {}: {connected}",
            controllers[0]
        );
        Ok(())
    }

    /// How many audit entries of `action` there are (naming `rollout`, when
    /// given), read through the stack's controller.
    pub async fn audited(&self, action: &str, rollout: Option<&str>) -> Result<usize> {
        Ok(self
            .audit_entries()
            .await?
            .into_iter()
            .filter(|e| e["action"] == action && rollout.is_none_or(|r| e["rollout_id"] == r))
            .count())
    }

    /// Waits until `zone`'s agent journal is empty: every event and result
    /// acknowledged by a controller after storing it (it is truncated then).
    pub async fn journal_settled(&self, zone: &str) -> Result<()> {
        let journal = self.zone(zone).backup_dir.join("pgrollout-agent.journal");
        let deadline = std::time::Instant::now() + CONNECT;
        loop {
            let len = std::fs::metadata(&journal)
                .with_context(|| journal.display().to_string())?
                .len();
            if len == 0 {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the agent's journal still holds {len} bytes unacknowledged"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
