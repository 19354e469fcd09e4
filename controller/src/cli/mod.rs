//! The operator's command line: `pgrollout <command>`. Each command returns
//! the exit code of DESIGN §9; `main` turns it into the process status.

mod adopt;
mod agents;
mod alert;
mod alert_report;
mod approve;
mod audit;
mod batch;
mod ca;
mod connect;
mod deploy;
mod disable;
mod doubt;
mod drift;
mod failover;
mod fleet_report;
mod follow;
mod history;
mod lint;
mod log;
mod metrics;
mod operation;
mod output;
mod plan;
mod probe;
mod report;
mod request;
mod resume;
mod retire;
mod rollback;
mod serve;
mod shell_docs;
mod signing;
mod status;
mod store_fill;
mod style;

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
    #[command(subcommand)]
    command: Command,
}

/// How an operator command reaches the controller. Flattened into each
/// command that talks to it — never onto `pgrollout` itself — so `ca`,
/// `serve`, `lint` and the other local commands do not list flags that do
/// not apply to them (issue 16).
#[derive(clap::Args)]
pub struct Connection {
    /// The controller's operator endpoint.
    #[arg(
        long,
        global = true,
        env = "PGROLLOUT_ADDR",
        default_value = "https://127.0.0.1:7410"
    )]
    controller: String,
    #[command(flatten)]
    tls: connect::OperatorTls,
}

/// A command's own arguments plus the [`Connection`] flags.
#[derive(clap::Args)]
pub struct Remote<A: clap::Args> {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    args: A,
}

/// `alert`: the connection flags apply to each of its subcommands.
#[derive(clap::Args)]
pub struct AlertCommands {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: alert::AlertCommand,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        /// The controller's config file (TOML: listeners, store, environments,
        /// TLS, operators; see deploy/examples/controller.toml).
        #[arg(long, env = "PGROLLOUT_CONTROLLER_CONFIG")]
        config: PathBuf,
        /// Development only: no TLS, loopback listeners only, identities taken on trust.
        #[arg(long)]
        dev_plaintext: bool,
    },
    /// Deploy every routine named <procedure> to <environment>.
    Deploy(Remote<RolloutArgs>),
    /// Deploy every procedure named in <list-file> to <environment>, in dependency order.
    Batch(Remote<batch::BatchArgs>),
    /// Run the smoke tests of <procedure> against <environment>'s live definitions.
    Smoke(Remote<RolloutArgs>),
    /// Dry-run apply of <procedure>... on <environment>'s database, rolled back,
    /// with plpgsql_check findings where installed; changes nothing.
    Check(Remote<probe::ProbeArgs>),
    /// Time each [perf] probe of <procedure>... on the old and the new definition
    /// in <environment> (rolled back) and record the medians for the performance gate.
    Perf(Remote<probe::ProbeArgs>),
    /// Restore the previous version of <procedure> in <environment> (or a named
    /// one with --to, or undo a whole rollout with --rollout), exactly.
    Rollback(Remote<rollback::RollbackArgs>),
    /// Retire one routine from <environment>: backed up, dropped, ledgered and
    /// audited like any change, gated as a deploy; `rollback` restores it.
    Retire(Remote<retire::RetireArgs>),
    /// Emergency switch: rename every routine of <procedure> to
    /// <name>_disabled_<yyyymmdd>, or revoke EXECUTE with --revoke.
    Disable(Remote<disable::DisableArgs>),
    /// Undo the latest disable of <procedure>, exactly.
    Enable(Remote<disable::EnableArgs>),
    /// Every version of <procedure> the environment's ledger knows.
    History(Remote<history::HistoryArgs>),
    /// What changed by hand in <environment>: every routine its ledger knows against the
    /// live catalog (definition, owner, ACL, comment, SECURITY DEFINER, SET …); exit 4 on drift.
    Drift(Remote<drift::DriftArgs>),
    /// Record the live state of routines changed by hand in <environment>'s ledger
    /// (approver or admin, --reason required, audited), so deploying over them stays reversible.
    Adopt(Remote<adopt::AdoptArgs>),
    /// Build the plan for procedures and show which gates it passes in every environment.
    Plan(Remote<plan::PlanArgs>),
    /// Every problem of the whole project at once (needs no controller); exit 1 on any error.
    Lint(lint::LintArgs),
    /// Approve a deploy request that waits for approval (`--as stakeholder` to sign off).
    Approve(Remote<approve::ApproveArgs>),
    /// Reject a deploy request that waits for approval.
    Reject(Remote<approve::RejectArgs>),
    /// Cancel a deploy request that awaits approval or is scheduled (nothing ran).
    Cancel(Remote<request::CancelArgs>),
    /// List the agents connected to the controller.
    Agents(Remote<agents::AgentsArgs>),
    /// One rollout as the controller recorded it, with its per-routine report.
    Status(Remote<status::StatusArgs>),
    /// Recent rollouts, newest first.
    Rollouts(Remote<status::RolloutsArgs>),
    /// The DEPLOYMENT LOG block of a recorded rollout (what, where, who, commit,
    /// backup, smoke verdict, duration, status), with its trace id.
    Log(Remote<log::LogArgs>),
    /// Deployment metrics per procedure: count, success rate, average duration, rollbacks, MTTR.
    Metrics(Remote<metrics::MetricsArgs>),
    /// Read the audit log (`audit verify` checks its hash chain).
    Audit(Remote<audit::AuditArgs>),
    /// Run the job of a rollout in doubt (`unknown`) again, as a new attempt:
    /// a job that did commit reports from the ledger instead of applying twice.
    Retry(Remote<doubt::RetryArgs>),
    /// Continue a halted fleet rollout (`f-…`) with its targets that did not succeed.
    Resume(Remote<resume::ResumeArgs>),
    /// Record what happened to a rollout in doubt (`--succeeded` or `--failed`, with `--reason`).
    Resolve(Remote<doubt::ResolveArgs>),
    /// Post-deploy watches: `alert create <procedure> <env>` before a deploy,
    /// then `alert list`, `alert cancel <id>`.
    Alert(AlertCommands),
    /// The built-in certificate authority: `init`, then `issue` certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Print a shell completion script (`pgrollout completions bash >
    /// /etc/bash_completion.d/pgrollout`).
    Completions(shell_docs::CompletionsArgs),
    /// Write man pages for pgrollout and each of its commands into a folder.
    Man(shell_docs::ManArgs),
    /// Benchmarks and tests only: add synthetic history to a stopped or
    /// running controller's store, through the store's own API.
    #[command(hide = true)]
    StoreFill(store_fill::StoreFillArgs),
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
    #[command(flatten)]
    attachments: follow::GateAttachments,
    #[command(flatten)]
    window: follow::WindowFlags,
    #[command(flatten)]
    output: output::OutputFlag,
    #[command(flatten)]
    fleet: follow::FleetFlags,
    /// Deploy only: first record the live state of the plan's routines that were changed by
    /// hand in the ledger (approver or admin; needs --reason), so the no_drift gate lets the
    /// deploy through and a rollback of it restores the hand-made version.
    #[arg(long, requires = "reason")]
    adopt_drift: bool,
    /// Why the hand changes are kept (with --adopt-drift): audited and written to the ledger.
    #[arg(long, requires = "adopt_drift")]
    reason: Option<String>,
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
    // `ca` needs no controller and no async runtime.
    let command = match cli.command {
        Command::Ca(command) => return ca::run(command),
        Command::Completions(args) => return shell_docs::completions(args),
        Command::Man(args) => return shell_docs::man(args),
        Command::Lint(args) => return lint::run(args),
        other => other,
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
    // The controller traces each rollout itself; every other command is one
    // trace, rooted at the command's span.
    let traced = !matches!(command, Command::Serve { .. });
    let command_name = subcommand_name();
    let run = async move {
        match command {
            Command::Serve {
                config,
                dev_plaintext,
            } => serve::run(&config, dev_plaintext).await,
            Command::Deploy(Remote {
                connection: c,
                args,
            }) => deploy::run(&c.controller, &c.tls, args, false).await,
            Command::Smoke(Remote {
                connection: c,
                args,
            }) => deploy::run(&c.controller, &c.tls, args, true).await,
            Command::Check(Remote {
                connection: c,
                args,
            }) => probe::check(&c.controller, &c.tls, args).await,
            Command::Perf(Remote {
                connection: c,
                args,
            }) => probe::perf(&c.controller, &c.tls, args).await,
            Command::Agents(Remote {
                connection: c,
                args,
            }) => agents::run(&c.controller, &c.tls, args).await,
            Command::Drift(Remote {
                connection: c,
                args,
            }) => drift::run(&c.controller, &c.tls, args).await,
            Command::Adopt(Remote {
                connection: c,
                args,
            }) => adopt::run(&c.controller, &c.tls, args).await,
            Command::Approve(Remote {
                connection: c,
                args,
            }) => approve::approve(&c.controller, &c.tls, args).await,
            Command::Reject(Remote {
                connection: c,
                args,
            }) => approve::reject(&c.controller, &c.tls, args).await,
            Command::Cancel(Remote {
                connection: c,
                args,
            }) => request::cancel(&c.controller, &c.tls, args).await,
            Command::Plan(Remote {
                connection: c,
                args,
            }) => plan::run(&c.controller, &c.tls, args).await,
            Command::Status(Remote {
                connection: c,
                args,
            }) => status::status(&c.controller, &c.tls, args).await,
            Command::Rollouts(Remote {
                connection: c,
                args,
            }) => status::list(&c.controller, &c.tls, args).await,
            Command::Log(Remote {
                connection: c,
                args,
            }) => log::run(&c.controller, &c.tls, args).await,
            Command::Metrics(Remote {
                connection: c,
                args,
            }) => metrics::run(&c.controller, &c.tls, args).await,
            Command::Rollback(Remote {
                connection: c,
                args,
            }) => rollback::run(&c.controller, &c.tls, args).await,
            Command::Retire(Remote {
                connection: c,
                args,
            }) => retire::run(&c.controller, &c.tls, args).await,
            Command::Disable(Remote {
                connection: c,
                args,
            }) => disable::disable(&c.controller, &c.tls, args).await,
            Command::Enable(Remote {
                connection: c,
                args,
            }) => disable::enable(&c.controller, &c.tls, args).await,
            Command::History(Remote {
                connection: c,
                args,
            }) => history::run(&c.controller, &c.tls, args).await,
            Command::Audit(Remote {
                connection: c,
                args,
            }) => audit::run(&c.controller, &c.tls, args).await,
            Command::Batch(Remote {
                connection: c,
                args,
            }) => batch::run(&c.controller, &c.tls, args).await,
            Command::Retry(Remote {
                connection: c,
                args,
            }) => doubt::retry(&c.controller, &c.tls, args).await,
            Command::Resolve(Remote {
                connection: c,
                args,
            }) => doubt::resolve(&c.controller, &c.tls, args).await,
            Command::Resume(Remote {
                connection: c,
                args,
            }) => resume::run(&c.controller, &c.tls, args).await,
            Command::Alert(AlertCommands {
                connection: c,
                command,
            }) => alert::run(&c.controller, &c.tls, command).await,
            Command::StoreFill(args) => store_fill::run(args).await,
            Command::Ca(_) | Command::Completions(_) | Command::Man(_) | Command::Lint(_) => {
                ExitCode::Success
            }
        }
    };
    let code = runtime.block_on(async move {
        if traced {
            crate::telemetry::traced_command(&command_name, run).await
        } else {
            run.await
        }
    });
    // The command is done and has said everything: work left behind (say, a
    // connection `batch` opened ahead that a validation failure made moot,
    // still resolving a name) must not hold up the exit.
    runtime.shutdown_background();
    code
}

/// The subcommand as typed (`deploy`, `audit`, …), for the command's span.
fn subcommand_name() -> String {
    use clap::CommandFactory;
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    std::env::args()
        .skip(1)
        .find(|arg| names.contains(arg))
        .unwrap_or_else(|| "command".to_owned())
}
