//! The Prometheus text exposition format (version 0.0.4) of the figures in
//! `super`, plus agents connected per zone and rollouts by kind and state.
//! Durations are in seconds, as Prometheus conventions ask.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::ProcedureFigures;
use crate::store::StateCount;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape shows.
pub struct Scrape<'a> {
    pub figures: &'a [ProcedureFigures],
    /// Every configured zone (zero when none is connected) and any other
    /// zone with a connected agent.
    pub agents_by_zone: &'a BTreeMap<String, u64>,
    pub rollouts: &'a [StateCount],
}

/// One metric family per procedure and environment: name, type, help, and
/// the sample's value (none: no sample, e.g. MTTR without a rollback).
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ProcedureFigures) -> Option<String>,
);

pub fn render(scrape: &Scrape<'_>) -> String {
    let mut out = String::new();
    let per_procedure: [Family; 6] = [
        (
            "pgrollout_deployments_total",
            "counter",
            "Finished deploy rollouts.",
            |f| Some(f.deployments.to_string()),
        ),
        (
            "pgrollout_deployment_successes_total",
            "counter",
            "Finished deploy rollouts that exited 0.",
            |f| Some(f.successes.to_string()),
        ),
        (
            "pgrollout_deployment_success_ratio",
            "gauge",
            "Successful deploys over finished deploys.",
            |f| f.success_rate().map(|r| r.to_string()),
        ),
        (
            "pgrollout_deployment_duration_seconds_average",
            "gauge",
            "Mean time from recording a deploy to recording its end.",
            |f| f.average_duration_ms.map(seconds),
        ),
        (
            "pgrollout_rollbacks_total",
            "counter",
            "Rollback rollouts that exited 0.",
            |f| Some(f.rollbacks.to_string()),
        ),
        (
            "pgrollout_mttr_seconds",
            "gauge",
            "Mean time from a failed or rolled-back deploy's end to its rollback's end.",
            |f| f.mttr_ms.map(seconds),
        ),
    ];
    for (name, kind, help, value) in per_procedure {
        header(&mut out, name, kind, help);
        for figures in scrape.figures {
            if let Some(value) = value(figures) {
                let labels = [
                    ("procedure", figures.procedure.as_str()),
                    ("environment", figures.environment.as_str()),
                ];
                sample(&mut out, name, &labels, &value);
            }
        }
    }
    let name = "pgrollout_agents_connected";
    header(&mut out, name, "gauge", "Agents connected now, by zone.");
    for (zone, count) in scrape.agents_by_zone {
        sample(&mut out, name, &[("zone", zone)], &count.to_string());
    }
    let name = "pgrollout_rollouts";
    header(
        &mut out,
        name,
        "gauge",
        "Rollouts recorded, by kind and state.",
    );
    for count in scrape.rollouts {
        let labels = [
            ("kind", count.kind.as_str()),
            ("state", count.state.as_str()),
        ];
        sample(&mut out, name, &labels, &count.count.to_string());
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
}

/// Milliseconds as seconds: `1234` → `1.234`.
fn seconds(ms: u64) -> String {
    (ms as f64 / 1000.0).to_string()
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_carry_escaped_labels_and_seconds() {
        let figures = [ProcedureFigures {
            procedure: "odd\"name".into(),
            environment: "dev".into(),
            deployments: 3,
            successes: 2,
            average_duration_ms: Some(1_234),
            rollbacks: 0,
            mttr_ms: None,
            mttr_samples: 0,
        }];
        let zones = BTreeMap::from([("dev".to_owned(), 1), ("qa".to_owned(), 0)]);
        let rollouts = [StateCount {
            kind: "deploy".into(),
            state: "failed".into(),
            count: 1,
        }];
        let text = render(&Scrape {
            figures: &figures,
            agents_by_zone: &zones,
            rollouts: &rollouts,
        });
        for line in [
            "# TYPE pgrollout_deployments_total counter",
            "pgrollout_deployments_total{procedure=\"odd\\\"name\",environment=\"dev\"} 3",
            "pgrollout_deployment_success_ratio{procedure=\"odd\\\"name\",environment=\"dev\"} 0.6666666666666666",
            "pgrollout_deployment_duration_seconds_average{procedure=\"odd\\\"name\",environment=\"dev\"} 1.234",
            "pgrollout_agents_connected{zone=\"qa\"} 0",
            "pgrollout_rollouts{kind=\"deploy\",state=\"failed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("pgrollout_mttr_seconds{"), "{text}");
    }
}
