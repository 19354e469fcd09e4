//! The operator's command line: `pgrollout <command>`. Each command returns
//! the exit code of DESIGN §9; `main` turns it into the process status.

mod agents;
mod connect;
mod deploy;
mod report;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgrollout_shared::exit_code::ExitCode;

#[derive(Parser)]
#[command(
    name = "pgrollout",
    version = pgrollout_shared::VERSION,
    about = "Gated, atomic, reversible, validated, audited PostgreSQL routine rollouts"
)]
pub struct Cli {
    /// The controller's operator endpoint.
    #[arg(
        long,
        global = true,
        env = "PGROLLOUT_ADDR",
        default_value = "http://127.0.0.1:7410"
    )]
    controller: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        #[arg(long, env = "PGROLLOUT_CONTROLLER_CONFIG")]
        config: PathBuf,
    },
    /// Deploy every routine named <procedure> to <environment>.
    Deploy(RolloutArgs),
    /// Run the smoke tests of <procedure> against <environment>'s live definitions.
    Smoke(RolloutArgs),
    /// List the agents connected to the controller.
    Agents,
}

#[derive(clap::Args)]
struct RolloutArgs {
    /// Routine name as in the project (all overloads), e.g. reconcilemupstream.
    procedure: String,
    /// Environment from the controller's config, e.g. dev, qa, prod.
    environment: String,
    /// The procedure project: a directory with procedures/*.sql.
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

/// Parses arguments and runs the command. Usage errors exit 1, like every
/// other validation failure, rather than clap's default 2, which means
/// "deployment failed" here.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::Success
                }
                _ => ExitCode::ValidationFailed,
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pgrollout: cannot start the async runtime: {error}");
            return ExitCode::DeploymentFailed;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve::run(&config).await,
            Command::Deploy(args) => deploy::run(&cli.controller, args, false).await,
            Command::Smoke(args) => deploy::run(&cli.controller, args, true).await,
            Command::Agents => agents::run(&cli.controller).await,
        }
    })
}
