//! `pgrollout alert create|list|cancel` (SEED.md's `create-alert.sh` and
//! "Monitor (24h)"): a post-deploy watch of a procedure in an environment.
//! Created before the deploy, its first sample is the baseline; the zone's
//! agent then samples `pg_stat_user_functions` and probes the routines'
//! smoke tests every `--every`, and the controller notifies the
//! environment's channels when a routine's mean time per call since the
//! baseline exceeds `--threshold` of the baseline, or its calls start
//! failing. Rendering lives in `alert_report.rs`.

use pgrollout_shared::text::escaped;
use std::path::PathBuf;
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    watches_client::WatchesClient, CancelWatchRequest, CreateWatchRequest, ListWatchesRequest,
};
use tonic::transport::Channel;

use super::alert_report;
use super::connect::{self, OperatorTls};
use crate::project::Project;

#[derive(clap::Subcommand)]
pub enum AlertCommand {
    /// Watch <procedure> in <environment> from now on (create it before the
    /// deploy: its first sample is the pre-deploy baseline).
    Create(CreateArgs),
    /// Watches live or ended in the last 24 hours, with their baseline, last
    /// sample and state.
    List(ListArgs),
    /// End a watch now.
    Cancel(CancelArgs),
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Routine name as in the project (all overloads), e.g. reconcilemupstream.
    procedure: String,
    /// Environment from the controller's config, e.g. prod.
    environment: String,
    /// How long to watch.
    #[arg(long = "for", default_value = "24h", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Alert when the mean time per call since the baseline exceeds this
    /// share of the baseline mean.
    #[arg(long, default_value = "120%", value_parser = parse_percent)]
    threshold: u32,
    /// How often the zone's agent samples.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Calls since the baseline needed before speed is judged.
    #[arg(long, default_value_t = 10)]
    min_calls: u64,
    /// A slower mean must also be slower by at least this much (noise floor).
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    min_increase: Duration,
    /// Also alert when the mean time per call since the baseline exceeds
    /// this, baseline or not: how a brand-new routine (no calls before the
    /// deploy) is watched for speed, e.g. --max-time 50ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_time: Option<Duration>,
    /// The procedure project: its smoke tests are the probes.
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this environment.
    #[arg(long = "env")]
    environment: Option<String>,
    /// Every watch, however long ago it ended.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    output: super::output::OutputFlag,
}

#[derive(clap::Args)]
pub struct CancelArgs {
    /// The watch's id, as `alert create` and `alert list` print it (w-…).
    watch_id: String,
}

/// `120%` or `120`: a percentage of the baseline.
fn parse_percent(text: &str) -> Result<u32, String> {
    text.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{text:?}: expected a percentage of the baseline, e.g. 120%"))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub async fn run(address: &str, tls: &OperatorTls, command: AlertCommand) -> ExitCode {
    match command {
        AlertCommand::Create(args) => create(address, tls, args).await,
        AlertCommand::List(args) => list(address, tls, args).await,
        AlertCommand::Cancel(args) => cancel(address, tls, args).await,
    }
}

async fn client(address: &str, tls: &OperatorTls) -> Result<WatchesClient<Channel>, ExitCode> {
    match connect::channel(address, tls).await {
        Ok(channel) => Ok(WatchesClient::new(channel)
            .max_decoding_message_size(connect::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(connect::MAX_MESSAGE_BYTES)),
        Err((code, message)) => Err(fail(code, &message)),
    }
}

async fn create(address: &str, tls: &OperatorTls, args: CreateArgs) -> ExitCode {
    let project = match Project::load_for(&args.project, std::slice::from_ref(&args.procedure)) {
        Ok(project) => project,
        Err(error) => return fail(ExitCode::ValidationFailed, &connect::error_chain(&error)),
    };
    let routines = match project.select(&args.procedure) {
        Ok(routines) => routines,
        Err(error) => return fail(ExitCode::ValidationFailed, &error.to_string()),
    };
    let mut client = match client(address, tls).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = CreateWatchRequest {
        environment: args.environment.clone(),
        procedure: args.procedure.clone(),
        routines: routines.into_iter().map(Into::into).collect(),
        duration_ms: millis(args.duration),
        threshold_percent: args.threshold,
        every_ms: millis(args.every),
        min_calls: args.min_calls,
        min_increase_us: u64::try_from(args.min_increase.as_micros()).unwrap_or(u64::MAX),
        agent_wait_ms: millis(args.agent_wait),
        max_time_us: args
            .max_time
            .map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
    };
    match client.create_watch(request).await {
        Ok(response) => {
            let watch = escaped(response.into_inner(), "pgrollout.v1.WatchStatus");
            print!("{}", alert_report::created(&watch));
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            fail(code, &message)
        }
    }
}

async fn list(address: &str, tls: &OperatorTls, args: ListArgs) -> ExitCode {
    let mut client = match client(address, tls).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = ListWatchesRequest {
        environment: args.environment.unwrap_or_default(),
        include_ended: args.all,
    };
    match client.list_watches(request).await {
        Ok(response) => {
            let watches =
                escaped(response.into_inner(), "pgrollout.v1.ListWatchesResponse").watches;
            if args.output.json() {
                super::output::print(&serde_json::Value::Array(
                    watches.iter().map(alert_report::as_json).collect(),
                ));
                return ExitCode::Success;
            }
            if watches.is_empty() {
                println!(
                    "no watches{}",
                    if args.all {
                        ""
                    } else {
                        " live or ended in the last 24 hours (--all lists every one)"
                    }
                );
            }
            for watch in &watches {
                print!("{}", alert_report::listed(watch));
            }
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            fail(code, &message)
        }
    }
}

async fn cancel(address: &str, tls: &OperatorTls, args: CancelArgs) -> ExitCode {
    let mut client = match client(address, tls).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let request = CancelWatchRequest {
        watch_id: args.watch_id,
    };
    match client.cancel_watch(request).await {
        Ok(response) => {
            let watch = escaped(response.into_inner(), "pgrollout.v1.WatchStatus");
            println!(
                "watch {} of {} in {} cancelled after {} sample(s); last state: {}",
                watch.watch_id, watch.procedure, watch.environment, watch.samples, watch.reason
            );
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            fail(code, &message)
        }
    }
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_as_percentages() {
        assert_eq!(parse_percent("120%"), Ok(120));
        assert_eq!(parse_percent(" 150 "), Ok(150));
        assert!(parse_percent("1.5x").is_err());
    }
}
