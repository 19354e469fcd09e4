//! `pgrollout metrics [<procedure>] [--env E] [--output json]`: SEED.md's
//! deployment metrics per procedure and environment — deployments, success
//! rate, average duration, rollbacks, MTTR — as the controller computes
//! them from its store (definitions in `crate::metrics`).

use super::output::Output;
use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{MetricsRequest, ProcedureMetrics};
use serde_json::json;

use super::connect::{self, OperatorTls};

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Only this procedure (as deployed: the rollout's label).
    procedure: Option<String>,
    /// Only this environment.
    #[arg(long = "env")]
    environment: Option<String>,
    /// text (default) or json.
    #[arg(long, default_value = "text")]
    output: Output,
}

pub async fn run(address: &str, tls: &OperatorTls, args: MetricsArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let request = MetricsRequest {
        procedure: args.procedure.unwrap_or_default(),
        environment: args.environment.unwrap_or_default(),
    };
    let procedures = match client.get_metrics(request).await {
        Ok(response) => response.into_inner().procedures,
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            return fail(code, &message);
        }
    };
    match args.output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = procedures.iter().map(as_json).collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        Output::Text if procedures.is_empty() => println!("no deployments recorded"),
        Output::Text => print!("{}", table(&procedures)),
    }
    ExitCode::Success
}

/// One row per procedure and environment, columns aligned.
fn table(procedures: &[ProcedureMetrics]) -> String {
    let width =
        |header: &str, values: Vec<usize>| values.into_iter().fold(header.len(), usize::max);
    let name = width(
        "PROCEDURE",
        procedures.iter().map(|p| p.procedure.len()).collect(),
    );
    let env = width(
        "ENVIRONMENT",
        procedures.iter().map(|p| p.environment.len()).collect(),
    );
    let mut text = format!(
        "{:<name$}  {:<env$}  {:>7}  {:>7}  {:>12}  {:>9}  {:>10}\n",
        "PROCEDURE", "ENVIRONMENT", "DEPLOYS", "SUCCESS", "AVG DURATION", "ROLLBACKS", "MTTR"
    );
    for p in procedures {
        let success = match p.deployments {
            0 => "-".to_owned(),
            n => format!("{:.1}%", p.successes as f64 * 100.0 / n as f64),
        };
        let average = (p.deployments > 0).then_some(p.average_duration_ms);
        let mttr = (p.mttr_samples > 0).then_some(p.mttr_ms);
        text.push_str(&format!(
            "{:<name$}  {:<env$}  {:>7}  {:>7}  {:>12}  {:>9}  {:>10}\n",
            p.procedure,
            p.environment,
            p.deployments,
            success,
            seconds(average),
            p.rollbacks,
            seconds(mttr)
        ));
    }
    text
}

/// `1.23s`, or `-` when there is nothing to average.
fn seconds(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{:.2}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".to_owned())
}

fn as_json(p: &ProcedureMetrics) -> serde_json::Value {
    let has_deploys = p.deployments > 0;
    json!({
        "procedure": p.procedure,
        "environment": p.environment,
        "deployments": p.deployments,
        "successes": p.successes,
        "success_rate": has_deploys.then(|| p.successes as f64 / p.deployments as f64),
        "average_duration_ms": has_deploys.then_some(p.average_duration_ms),
        "rollbacks": p.rollbacks,
        "mttr_ms": (p.mttr_samples > 0).then_some(p.mttr_ms),
        "mttr_samples": p.mttr_samples,
    })
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_and_marks_what_has_no_value() {
        let rows = [
            ProcedureMetrics {
                procedure: "reconcilemupstream".into(),
                environment: "dev".into(),
                deployments: 3,
                successes: 2,
                average_duration_ms: 1_234,
                rollbacks: 1,
                mttr_ms: 65_432,
                mttr_samples: 1,
            },
            ProcedureMetrics {
                procedure: "addarc".into(),
                environment: "prod".into(),
                rollbacks: 1,
                ..Default::default()
            },
        ];
        assert_eq!(
            table(&rows),
            "PROCEDURE           ENVIRONMENT  DEPLOYS  SUCCESS  AVG DURATION  ROLLBACKS        MTTR\n\
             reconcilemupstream  dev                3    66.7%         1.23s          1      65.43s\n\
             addarc              prod               0        -             -          1           -\n"
        );
    }
}
