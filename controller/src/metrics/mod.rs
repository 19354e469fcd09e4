//! SEED.md's deployment metrics, per procedure (a rollout's label) and
//! environment, computed from the store (kept up to date as rollouts settle,
//! `summary.rs`, with the values [`compute`] gives over the whole history):
//!
//! - **Deployment count**: deploy rollouts that finished (any end state:
//!   succeeded, failed, rolled back, unknown). Batches count under their
//!   list's label. Smoke tests, history, disable and enable are not deploys.
//! - **Success rate**: of those, the share that exited 0. A deploy that was
//!   later rolled back did succeed as a deploy; the rollback shows in the
//!   rollback count and in MTTR.
//! - **Average duration**: the mean of `finished_at − created_at` (the
//!   controller's clock, from recording the rollout to recording its end)
//!   over the finished deploys, rounded to the millisecond.
//! - **Rollback count**: rollback rollouts of the procedure in the
//!   environment that exited 0.
//! - **MTTR (mean time to rollback)**: for each of those rollbacks R, take
//!   the most recent deploy D of the same procedure in the same environment
//!   that finished before R started and either failed (exit ≠ 0) or is now
//!   marked rolled back. If there is such a D and no earlier rollback was
//!   already matched to it, R's time to rollback is `R.finished_at −
//!   D.finished_at`. MTTR is the mean of those times, rounded to the
//!   millisecond; a rollback with no such D (e.g. of a version deployed by
//!   hand) adds nothing, and with no matched rollback there is no MTTR.

mod figures;
pub mod http;
mod prometheus;
mod summary;
#[cfg(test)]
mod summary_tests;

#[cfg(test)]
use std::collections::{BTreeMap, HashSet};

pub use figures::ProcedureFigures;

#[cfg(test)]
use crate::store::{state, FinishedRollout};
use crate::store::{Store, StoreError};

/// How often `serve` brings the summary up to date between reads.
const KEEP_CURRENT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// `serve`'s task: builds the store's summary at start (not at the first
/// scrape) and applies the change log every minute, so the log stays short
/// even where nothing reads the metrics.
pub async fn keep_current(store: Store) {
    let mut tick = tokio::time::interval(KEEP_CURRENT_EVERY);
    loop {
        tick.tick().await;
        if let Err(error) = summary::with_summary(&store, |_| ()).await {
            tracing::warn!(
                error = %pgrollout_shared::errors::error_chain(&error),
                "metrics: bringing the summary up to date failed; the next read tries again"
            );
        }
    }
}

/// The figures, sorted by procedure then environment, optionally for one
/// procedure and one environment (empty = all): [`compute`]'s, kept up to
/// date by `summary.rs` so a call costs what changed, not the history.
pub async fn figures(
    store: &Store,
    procedure: &str,
    environment: &str,
) -> Result<Vec<ProcedureFigures>, StoreError> {
    summary::with_summary(store, |summary| summary.by_label(procedure, environment)).await
}

/// The definitions above, applied to rollouts in creation order: the
/// reference `summary.rs` is held equal to (`summary_tests.rs`).
#[cfg(test)]
pub fn compute(rollouts: &[FinishedRollout]) -> Vec<ProcedureFigures> {
    let mut groups: BTreeMap<(&str, &str), Vec<&FinishedRollout>> = BTreeMap::new();
    for rollout in rollouts {
        groups
            .entry((&rollout.procedure, &rollout.environment))
            .or_default()
            .push(rollout);
    }
    groups
        .into_iter()
        .map(|((procedure, environment), rollouts)| {
            let mut rollouts = rollouts;
            rollouts.sort_by_key(|r| (r.created_at_unix_ms, r.rollout_id.as_str()));
            figures_of(procedure, environment, &rollouts)
        })
        .collect()
}

#[cfg(test)]
fn figures_of(
    procedure: &str,
    environment: &str,
    rollouts: &[&FinishedRollout],
) -> ProcedureFigures {
    let deploys: Vec<&FinishedRollout> = rollouts
        .iter()
        .copied()
        .filter(|r| r.kind == "deploy")
        .collect();
    let rollbacks: Vec<&FinishedRollout> = rollouts
        .iter()
        .copied()
        .filter(|r| r.kind == "rollback" && r.exit_code == 0)
        .collect();
    let durations: Vec<i64> = deploys
        .iter()
        .map(|d| (d.finished_at_unix_ms - d.created_at_unix_ms).max(0))
        .collect();
    let is_bad = |d: &FinishedRollout| d.exit_code != 0 || d.state == state::ROLLED_BACK;
    let mut answered: HashSet<&str> = HashSet::new();
    let mut times_to_rollback = Vec::new();
    for rollback in &rollbacks {
        let incident = deploys
            .iter()
            .filter(|d| d.finished_at_unix_ms <= rollback.created_at_unix_ms && is_bad(d))
            .max_by_key(|d| (d.finished_at_unix_ms, d.created_at_unix_ms));
        if let Some(deploy) = incident {
            if answered.insert(&deploy.rollout_id) {
                times_to_rollback
                    .push((rollback.finished_at_unix_ms - deploy.finished_at_unix_ms).max(0));
            }
        }
    }
    ProcedureFigures {
        procedure: procedure.to_owned(),
        environment: environment.to_owned(),
        deployments: deploys.len() as u64,
        successes: deploys.iter().filter(|d| d.exit_code == 0).count() as u64,
        average_duration_ms: mean_ms(&durations),
        rollbacks: rollbacks.len() as u64,
        mttr_ms: mean_ms(&times_to_rollback),
        mttr_samples: times_to_rollback.len() as u64,
    }
}

/// The mean, rounded half up to the millisecond; `None` for no values.
#[cfg(test)]
fn mean_ms(values: &[i64]) -> Option<u64> {
    let count = values.len() as i128;
    if count == 0 {
        return None;
    }
    let sum: i128 = values.iter().map(|v| *v as i128).sum();
    u64::try_from((2 * sum + count) / (2 * count)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(
        id: &str,
        kind: &str,
        procedure: &str,
        state: &str,
        exit_code: i32,
        created: i64,
        finished: i64,
    ) -> FinishedRollout {
        FinishedRollout {
            rollout_id: id.into(),
            plan_id: format!("plan-{id}"),
            kind: kind.into(),
            procedure: procedure.into(),
            environment: "dev".into(),
            state: state.into(),
            exit_code,
            created_at_unix_ms: created,
            finished_at_unix_ms: finished,
            names_routines: Some(true),
        }
    }

    #[test]
    fn counts_rates_durations_and_time_to_rollback_follow_the_definitions() {
        let figures = compute(&[
            rollout("d1", "deploy", "a", "succeeded", 0, 1_000, 2_000),
            rollout("d2", "deploy", "a", "rolled_back", 0, 3_000, 4_500),
            rollout("d3", "deploy", "a", "failed", 2, 5_000, 5_500),
            rollout("b1", "deploy", "b", "succeeded", 0, 6_000, 6_001),
            // Matched to d3, the latest bad deploy before it: 9_000 - 5_500.
            rollout("r1", "rollback", "a", "succeeded", 0, 8_000, 9_000),
            // Latest bad deploy is d3 again, already answered: no sample.
            rollout("r2", "rollback", "a", "succeeded", 0, 10_000, 11_000),
            // A failed rollback is not a rollback.
            rollout("r3", "rollback", "a", "failed", 2, 12_000, 12_500),
        ]);
        assert_eq!(
            figures,
            [
                ProcedureFigures {
                    procedure: "a".into(),
                    environment: "dev".into(),
                    deployments: 3,
                    successes: 2,
                    // (1000 + 1500 + 500) / 3
                    average_duration_ms: Some(1_000),
                    rollbacks: 2,
                    mttr_ms: Some(3_500),
                    mttr_samples: 1,
                },
                ProcedureFigures {
                    procedure: "b".into(),
                    environment: "dev".into(),
                    deployments: 1,
                    successes: 1,
                    average_duration_ms: Some(1),
                    rollbacks: 0,
                    mttr_ms: None,
                    mttr_samples: 0,
                },
            ]
        );
        assert_eq!(figures[0].success_rate(), Some(2.0 / 3.0));
    }

    #[test]
    fn a_rollback_after_a_good_deploy_has_no_time_to_rollback() {
        let figures = compute(&[
            rollout("d1", "deploy", "a", "succeeded", 0, 1_000, 2_000),
            rollout("r1", "rollback", "a", "succeeded", 0, 3_000, 4_000),
        ]);
        assert_eq!(figures[0].rollbacks, 1);
        assert_eq!((figures[0].mttr_ms, figures[0].mttr_samples), (None, 0));
    }

    #[test]
    fn means_round_half_up_to_the_millisecond() {
        assert_eq!(mean_ms(&[]), None);
        assert_eq!(mean_ms(&[1, 2]), Some(2));
        assert_eq!(mean_ms(&[1, 1, 2]), Some(1));
    }
}
