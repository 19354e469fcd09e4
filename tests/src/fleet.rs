//! Multi-target set-ups (issue 24): several databases in a zone's cluster,
//! each a target of the zone's agent with its labels, and clients to them.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::stack::{Stack, PASSWORD_ENV};

/// A target to add to a zone: its database (also its name) and labels as
/// TOML inline-table content, e.g. `tier = "prod"`.
pub struct ExtraTarget<'a> {
    pub name: &'a str,
    pub labels: &'a str,
}

impl Stack {
    /// Creates each target's database in the zone's cluster and adds it to
    /// the zone's agent config; takes effect when the agent (re)starts.
    pub async fn add_targets(&self, zone: &str, targets: &[ExtraTarget<'_>]) -> Result<()> {
        let entry = self.zone(zone);
        let mut config = std::fs::read_to_string(&entry.agent_config)?;
        for target in targets {
            entry
                .pg
                .execute_sql(&format!("CREATE DATABASE {}", target.name))
                .await
                .with_context(|| format!("creating database {} in {zone}", target.name))?;
            config.push_str(&format!(
                "\n[[targets]]\nname = \"{name}\"\nlabels = {{ {labels} }}\nhost = \"{}\"\nport = {}\n\
                 dbname = \"{name}\"\nuser = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
                entry.pg.host(),
                entry.pg.port(),
                entry.pg.superuser(),
                name = target.name,
                labels = target.labels,
            ));
        }
        std::fs::write(&entry.agent_config, config)?;
        Ok(())
    }

    /// A client to database `dbname` of the zone's cluster.
    pub async fn connect_target(&self, zone: &str, dbname: &str) -> Result<Client> {
        let mut config = self.zone(zone).pg.config();
        config.dbname(dbname);
        crate::connect(&config)
            .await
            .with_context(|| format!("connecting to {zone}/{dbname}"))
    }
}
