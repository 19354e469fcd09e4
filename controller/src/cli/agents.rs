//! `pgrollout agents`: who is connected, in which zone, serving what.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::ListAgentsRequest;

use super::connect;
use super::output::{self, OutputFlag};

#[derive(clap::Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn run(address: &str, tls: &connect::OperatorTls, args: AgentsArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    match client.list_agents(ListAgentsRequest {}).await {
        Ok(response) => {
            let agents = pgrollout_shared::text::escaped(
                response.into_inner(),
                "pgrollout.v1.ListAgentsResponse",
            )
            .agents;
            if args.output.json() {
                let now = now_unix_ms();
                output::print(&serde_json::Value::Array(
                    agents
                        .iter()
                        .map(|agent| {
                            serde_json::json!({
                                "name": agent.name,
                                "zone": agent.zone,
                                "version": agent.version,
                                "targets": agent.targets.iter().map(|t| serde_json::json!({
                                    "name": t.name, "dbname": t.dbname,
                                })).collect::<Vec<_>>(),
                                "connected_at_unix_ms": agent.connected_at_unix_ms,
                                "last_heartbeat_unix_ms": agent.last_heartbeat_unix_ms,
                                "last_heard_ms_ago": (now - agent.last_heartbeat_unix_ms).max(0),
                            })
                        })
                        .collect(),
                ));
                return ExitCode::Success;
            }
            if agents.is_empty() {
                println!("no agents connected");
                return ExitCode::Success;
            }
            println!(
                "{:<10} {:<20} {:<10} {:<24} LAST HEARD",
                "ZONE", "AGENT", "VERSION", "TARGETS"
            );
            for agent in agents {
                let targets: Vec<String> = agent
                    .targets
                    .iter()
                    .map(|t| format!("{} ({})", t.name, t.dbname))
                    .collect();
                let ago = (now_unix_ms() - agent.last_heartbeat_unix_ms).max(0) as f64 / 1000.0;
                let draining = if agent.draining {
                    " (draining: no new jobs)"
                } else {
                    ""
                };
                println!(
                    "{:<10} {:<20} {:<10} {:<24} {ago:.1}s ago{draining}",
                    agent.zone,
                    agent.name,
                    agent.version,
                    targets.join(", ")
                );
            }
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            eprintln!("pgrollout: {message}");
            code
        }
    }
}
