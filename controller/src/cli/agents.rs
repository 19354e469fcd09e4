//! `pgrollout agents`: who is connected, in which zone, serving what.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::ListAgentsRequest;

use super::connect;

pub async fn run(address: &str, tls: &connect::OperatorTls) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    match client.list_agents(ListAgentsRequest {}).await {
        Ok(response) => {
            let agents = response.into_inner().agents;
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
