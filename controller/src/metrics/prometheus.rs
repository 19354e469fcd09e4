//! The controller's `/metrics` exposition, through `prometheus-client`
//! (text format 0.0.4; shared pieces in `pgrollout_shared::metrics`):
//!
//! - SEED.md's figures of `super`, per real routine (`procedure`, the
//!   deployed routine's name) and environment; batches are counted together
//!   under `kind="batch"` per environment, never under their list's name.
//! - `pgrollout_deploy_duration_seconds{environment,kind}` (kind `deploy` or
//!   `batch`) and `pgrollout_rollback_duration_seconds{environment}`:
//!   histograms of every finished rollout's time from recording to end, so
//!   `rate()` and `histogram_quantile()` work.
//! - Agents connected per zone, rollouts by kind and state, notification
//!   failures, dropped spans, `pgrollout_build_info` and the `process_*`
//!   metrics.
//!
//! Durations are in seconds, as Prometheus conventions ask.

use std::collections::BTreeMap;

use pgrollout_shared::metrics::{self as shared, DurationFamily, FloatGauge, Labels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::figures::ProcedureFigures;
use crate::store::{DriftGauge, StateCount};

/// The kinds of drift a scan reports, each shown (zero when none), so an
/// alert on `pgrollout_drift_routines > 0` also sees the drift go away.
const DRIFT_KINDS: [&str; 4] = ["changed", "dropped", "renamed", "unmanaged"];

/// Everything one scrape shows.
pub struct Scrape<'a> {
    /// Deploys of one routine, by procedure and environment.
    pub figures: &'a [ProcedureFigures],
    /// Batches, by environment (their `procedure` is empty).
    pub batch_figures: &'a [ProcedureFigures],
    /// Every finished deploy's duration, by environment and kind
    /// (`deploy` or `batch`), and every rollback's, by environment.
    pub deploy_durations: DurationFamily,
    pub rollback_durations: DurationFamily,
    /// Every configured zone (zero when none is connected) and any other
    /// zone with a connected agent.
    pub agents_by_zone: &'a BTreeMap<String, u64>,
    pub rollouts: &'a [StateCount],
    /// Each environment's latest drift scan of all its routines.
    pub drift: &'a [DriftGauge],
}

pub fn render(scrape: &Scrape<'_>) -> String {
    let mut registry = Registry::default();
    register_figures(&mut registry, scrape);
    register_durations(&mut registry, scrape);
    let agents = Family::<Labels, Gauge>::default();
    for (zone, count) in scrape.agents_by_zone {
        agents
            .get_or_create(&vec![("zone", zone.clone())])
            .set(i64::try_from(*count).unwrap_or(i64::MAX));
    }
    registry.register(
        "pgrollout_agents_connected",
        "Agents connected now, by zone",
        agents,
    );
    let rollouts = Family::<Labels, Gauge>::default();
    for count in scrape.rollouts {
        rollouts
            .get_or_create(&vec![
                ("kind", count.kind.clone()),
                ("state", count.state.clone()),
            ])
            .set(i64::try_from(count.count).unwrap_or(i64::MAX));
    }
    registry.register(
        "pgrollout_rollouts",
        "Rollouts recorded, by kind and state",
        rollouts,
    );
    register_drift(&mut registry, scrape.drift);
    registry.register(
        "pgrollout_notification_failures",
        "Notifications not delivered after their last attempt, by channel",
        crate::notify::failures::notification_failures().clone(),
    );
    registry.register(
        "pgrollout_controller_leader",
        "1 while this controller holds the singleton's lease (issue 18), else 0",
        crate::engine::leader::leader_gauge().clone(),
    );
    registry.register(
        "pgrollout_controller_fenced_writes_refused",
        "Writes of singleton work the store refused for a lost lease (fencing token), by singleton",
        crate::engine::leader::fenced_writes_refused().clone(),
    );
    shared::register_spans_dropped(&mut registry);
    shared::register_build_info(&mut registry, "pgrollout-controller");
    shared::register_process(&mut registry);
    shared::render(&registry)
}

fn register_drift(registry: &mut Registry, scans: &[DriftGauge]) {
    let routines = Family::<Labels, Gauge>::default();
    let scanned = Family::<Labels, Gauge>::default();
    for scan in scans {
        for kind in DRIFT_KINDS {
            let count = scan
                .findings
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            routines
                .get_or_create(&vec![
                    ("environment", scan.environment.clone()),
                    ("kind", kind.to_owned()),
                ])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        scanned
            .get_or_create(&vec![("environment", scan.environment.clone())])
            .set(scan.scanned_at / 1000);
    }
    registry.register(
        "pgrollout_drift_routines",
        "Routines that differ from the target's ledger in the environment's latest drift scan, by kind",
        routines,
    );
    registry.register(
        "pgrollout_drift_last_scan_timestamp_seconds",
        "When the environment's latest drift scan of all its routines ran (Unix time)",
        scanned,
    );
}

/// The labels of one row of figures: a routine's, or the batches' of an
/// environment.
fn labels(figures: &ProcedureFigures) -> Labels {
    if figures.procedure.is_empty() {
        vec![
            ("kind", "batch".to_owned()),
            ("environment", figures.environment.clone()),
        ]
    } else {
        vec![
            ("procedure", figures.procedure.clone()),
            ("environment", figures.environment.clone()),
        ]
    }
}

/// One family of the figures: name, help, and each row's value.
type PerRow<T> = (&'static str, &'static str, fn(&ProcedureFigures) -> T);

fn register_figures(registry: &mut Registry, scrape: &Scrape<'_>) {
    let rows = || scrape.figures.iter().chain(scrape.batch_figures);
    let counters: [PerRow<u64>; 3] = [
        ("pgrollout_deployments", "Finished deploy rollouts", |f| {
            f.deployments
        }),
        (
            "pgrollout_deployment_successes",
            "Finished deploy rollouts that exited 0",
            |f| f.successes,
        ),
        (
            "pgrollout_rollbacks",
            "Rollback rollouts that exited 0",
            |f| f.rollbacks,
        ),
    ];
    for (name, help, value) in counters {
        let family = Family::<Labels, Counter>::default();
        for figures in rows() {
            family
                .get_or_create(&labels(figures))
                .inc_by(value(figures));
        }
        registry.register(name, help, family);
    }
    let gauges: [PerRow<Option<f64>>; 3] = [
        (
            "pgrollout_deployment_success_ratio",
            "Successful deploys over finished deploys",
            |f| f.success_rate(),
        ),
        (
            "pgrollout_deployment_duration_seconds_average",
            "Mean time from recording a deploy to recording its end (see pgrollout_deploy_duration_seconds)",
            |f| f.average_duration_ms.map(seconds),
        ),
        (
            "pgrollout_mttr_seconds",
            "Mean time from a failed or rolled-back deploy's end to its rollback's end",
            |f| f.mttr_ms.map(seconds),
        ),
    ];
    for (name, help, value) in gauges {
        let family = Family::<Labels, FloatGauge>::default();
        for figures in rows() {
            if let Some(value) = value(figures) {
                family.get_or_create(&labels(figures)).set(value);
            }
        }
        registry.register(name, help, family);
    }
}

fn register_durations(registry: &mut Registry, scrape: &Scrape<'_>) {
    registry.register(
        "pgrollout_deploy_duration_seconds",
        "Finished deploys' time from recording to end, by environment and kind (deploy or batch)",
        scrape.deploy_durations.clone(),
    );
    registry.register(
        "pgrollout_rollback_duration_seconds",
        "Finished rollbacks' time from recording to end, by environment",
        scrape.rollback_durations.clone(),
    );
}

/// Milliseconds as seconds.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_carry_escaped_labels_seconds_and_buckets() {
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
        let batches = [ProcedureFigures {
            procedure: String::new(),
            environment: "dev".into(),
            deployments: 1,
            successes: 1,
            ..ProcedureFigures::default()
        }];
        let deploy_durations = pgrollout_shared::metrics::duration_family();
        for (kind, seconds) in [("deploy", 0.2), ("batch", 3.0)] {
            deploy_durations
                .get_or_create(&vec![
                    ("environment", "dev".to_owned()),
                    ("kind", kind.to_owned()),
                ])
                .observe(seconds);
        }
        let zones = BTreeMap::from([("dev".to_owned(), 1), ("qa".to_owned(), 0)]);
        let rollouts = [StateCount {
            kind: "deploy".into(),
            state: "failed".into(),
            count: 1,
        }];
        let text = render(&Scrape {
            figures: &figures,
            batch_figures: &batches,
            deploy_durations,
            rollback_durations: pgrollout_shared::metrics::duration_family(),
            agents_by_zone: &zones,
            rollouts: &rollouts,
            drift: &[DriftGauge {
                environment: "prod".into(),
                scanned_at: 1_796_000_000_500,
                findings: vec![("changed".into(), 2)],
            }],
        });
        for line in [
            "# TYPE pgrollout_deployments_total counter",
            "pgrollout_deployments_total{procedure=\"odd\\\"name\",environment=\"dev\"} 3",
            "pgrollout_deployments_total{kind=\"batch\",environment=\"dev\"} 1",
            "pgrollout_deployment_success_ratio{procedure=\"odd\\\"name\",environment=\"dev\"} 0.6666666666666666",
            "pgrollout_deployment_duration_seconds_average{procedure=\"odd\\\"name\",environment=\"dev\"} 1.234",
            "# TYPE pgrollout_deploy_duration_seconds histogram",
            "pgrollout_deploy_duration_seconds_bucket{environment=\"dev\",kind=\"deploy\",le=\"0.25\"} 1",
            "pgrollout_deploy_duration_seconds_bucket{environment=\"dev\",kind=\"deploy\",le=\"0.1\"} 0",
            "pgrollout_deploy_duration_seconds_count{environment=\"dev\",kind=\"batch\"} 1",
            "pgrollout_agents_connected{zone=\"qa\"} 0",
            "pgrollout_rollouts{kind=\"deploy\",state=\"failed\"} 1",
            "pgrollout_drift_routines{environment=\"prod\",kind=\"changed\"} 2",
            "pgrollout_drift_routines{environment=\"prod\",kind=\"dropped\"} 0",
            "pgrollout_drift_last_scan_timestamp_seconds{environment=\"prod\"} 1796000000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("pgrollout_mttr_seconds{"), "{text}");
        let build = format!(
            "pgrollout_build_info{{program=\"pgrollout-controller\",version=\"{}\"}} 1",
            pgrollout_shared::VERSION
        );
        assert!(
            text.lines().any(|l| l == build),
            "{build} missing from:\n{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }
}
