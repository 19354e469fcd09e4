//! The metrics kept up to date rather than recomputed (issue 17): a scrape
//! used to read every finished rollout, so its cost grew with history. Now
//! each opened store has one [`Summary`] in memory, built once from the whole
//! history and then brought up to date on each scrape from the store's change
//! log (`rollout_changes`, written by triggers, migration 0013): a scrape
//! costs what changed since the last one plus one row per group.
//!
//! The figures are exactly those of [`super::compute`] over the whole history.
//! Counts, sums and histograms just add up; the time to rollback is the one
//! figure that depends on order, and it is kept incrementally only for the
//! changes that arrive in the order `compute` reads them (a rollback newer
//! than every rollback counted; a deploy turning bad that no counted rollback
//! could have matched). Any other change — a finished rollout retried or
//! resolved, a rollout older than one counted, a deleted rollout — rebuilds
//! the summary from the store, which is rare and gives the same figures.
//!
//! A build reads the finished rollouts' rows and nothing else: whether a
//! plan's label names its routines (where `/metrics` counts its rollouts) is
//! the plan's `names_routines` column, written with the plan (migration
//! 0014), so no stored plan is decoded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pgrollout_shared::metrics::{duration_family, DurationFamily};

use super::figures::ProcedureFigures;
use crate::store::{state, FinishedRollout, RolloutChange, Store, StoreError};

/// The latest bad deploys are compared by (finished, created, id), as
/// `compute` picks the last of the latest.
type DeployKey = (i64, i64, String);

/// The incremental form of one group's figures (see `super::figures_of`).
#[derive(Default)]
struct Group {
    deployments: u64,
    successes: u64,
    duration_sum_ms: i128,
    rollbacks: u64,
    mttr_sum_ms: i128,
    mttr_samples: u64,
    /// (created, id) of the newest successful rollback counted.
    last_rollback: Option<(i64, String)>,
    /// The latest bad deploy that finished by `last_rollback`'s creation.
    best_below: Option<DeployKey>,
    /// Bad deploys that finished after it: a later rollback may match them.
    pending_bad: BTreeSet<DeployKey>,
    /// The deploy the newest matched rollback answered.
    last_answered: Option<DeployKey>,
}

/// A change `Group` cannot apply in `compute`'s order: rebuild.
struct OutOfOrder;

fn is_bad(rollout: &FinishedRollout) -> bool {
    rollout.exit_code != 0 || rollout.state == state::ROLLED_BACK
}

fn deploy_key(rollout: &FinishedRollout) -> DeployKey {
    (
        rollout.finished_at_unix_ms,
        rollout.created_at_unix_ms,
        rollout.rollout_id.clone(),
    )
}

impl Group {
    fn add(&mut self, rollout: &FinishedRollout) -> Result<(), OutOfOrder> {
        match rollout.kind.as_str() {
            "deploy" => self.add_deploy(rollout),
            "rollback" => self.add_rollback(rollout),
            _ => Ok(()),
        }
    }

    fn add_deploy(&mut self, deploy: &FinishedRollout) -> Result<(), OutOfOrder> {
        if is_bad(deploy) {
            self.add_bad(deploy)?;
        }
        self.deployments += 1;
        self.successes += u64::from(deploy.exit_code == 0);
        self.duration_sum_ms +=
            i128::from((deploy.finished_at_unix_ms - deploy.created_at_unix_ms).max(0));
        Ok(())
    }

    /// A deploy that is bad now. Out of order if a counted rollback was
    /// created after it finished: that rollback may have matched it.
    fn add_bad(&mut self, deploy: &FinishedRollout) -> Result<(), OutOfOrder> {
        if let Some((created, _)) = &self.last_rollback {
            if deploy.finished_at_unix_ms <= *created {
                return Err(OutOfOrder);
            }
        }
        self.pending_bad.insert(deploy_key(deploy));
        Ok(())
    }

    fn add_rollback(&mut self, rollback: &FinishedRollout) -> Result<(), OutOfOrder> {
        if rollback.exit_code != 0 {
            return Ok(());
        }
        let order = (rollback.created_at_unix_ms, rollback.rollout_id.clone());
        if self
            .last_rollback
            .as_ref()
            .is_some_and(|last| order <= *last)
        {
            return Err(OutOfOrder);
        }
        // Bad deploys that finished by the rollback's creation become
        // candidates; the latest of them all is its incident.
        let later = self.pending_bad.split_off(&(
            rollback.created_at_unix_ms.saturating_add(1),
            i64::MIN,
            String::new(),
        ));
        let eligible = std::mem::replace(&mut self.pending_bad, later);
        if let Some(latest) = eligible.into_iter().next_back() {
            if self.best_below.as_ref().is_none_or(|best| latest > *best) {
                self.best_below = Some(latest);
            }
        }
        if let Some(incident) = &self.best_below {
            // Incidents only move forward in this order, so "already
            // answered" is "answered by the previous match".
            if self.last_answered.as_ref() != Some(incident) {
                self.mttr_sum_ms += i128::from((rollback.finished_at_unix_ms - incident.0).max(0));
                self.mttr_samples += 1;
                self.last_answered = Some(incident.clone());
            }
        }
        self.rollbacks += 1;
        self.last_rollback = Some(order);
        Ok(())
    }

    fn figures(&self, procedure: &str, environment: &str) -> ProcedureFigures {
        ProcedureFigures {
            procedure: procedure.to_owned(),
            environment: environment.to_owned(),
            deployments: self.deployments,
            successes: self.successes,
            average_duration_ms: mean_ms(self.duration_sum_ms, self.deployments),
            rollbacks: self.rollbacks,
            mttr_ms: mean_ms(self.mttr_sum_ms, self.mttr_samples),
            mttr_samples: self.mttr_samples,
        }
    }
}

/// As `super::mean_ms`, from a sum and a count.
fn mean_ms(sum: i128, count: u64) -> Option<u64> {
    let count = i128::from(count);
    if count == 0 {
        return None;
    }
    u64::try_from((2 * sum + count) / (2 * count)).ok()
}

/// Every figure of one store's history.
pub struct Summary {
    /// The change log's position applied.
    watermark: i64,
    /// Finished rollouts it was built from (for the build's log line).
    rollouts: usize,
    /// `pgrollout metrics`: by the plan's label and environment.
    by_label: BTreeMap<(String, String), Group>,
    /// `/metrics`: deploys and rollbacks of one routine.
    routines: BTreeMap<(String, String), Group>,
    /// `/metrics`: batches, by environment.
    batches: BTreeMap<String, Group>,
    /// Labels of finished rollouts whose plan names its routines.
    routine_labels: HashSet<String>,
    /// Labels of routine-less plans (rollbacks) counted with the batches: a
    /// deploy of that routine would move them (`classify`), so it rebuilds.
    routineless_in_batches: HashSet<String>,
    /// Deploy durations by environment and kind (`deploy` or `batch`).
    pub deploy_durations: DurationFamily,
    /// Rollback durations by environment.
    pub rollback_durations: DurationFamily,
}

impl Summary {
    /// `pgrollout metrics`: by label and environment (empty = all).
    pub fn by_label(&self, procedure: &str, environment: &str) -> Vec<ProcedureFigures> {
        self.by_label
            .iter()
            .filter(|((p, e), _)| {
                (procedure.is_empty() || p == procedure)
                    && (environment.is_empty() || e == environment)
            })
            .map(|((p, e), group)| group.figures(p, e))
            .collect()
    }

    /// `/metrics`: deploys of one routine, by procedure and environment.
    pub fn routine_figures(&self) -> Vec<ProcedureFigures> {
        self.routines
            .iter()
            .map(|((p, e), group)| group.figures(p, e))
            .collect()
    }

    /// `/metrics`: batches, by environment (procedure empty).
    pub fn batch_figures(&self) -> Vec<ProcedureFigures> {
        self.batches
            .iter()
            .map(|(e, group)| group.figures("", e))
            .collect()
    }

    /// From the whole history: routine labels first, so no rollback is
    /// placed before the deploy that decides its group; then every deploy,
    /// then the rollbacks in `compute`'s order.
    async fn build(store: &Store) -> Result<Summary, StoreError> {
        let (watermark, rollouts) = store.finished_as_of_change().await?;
        let mut summary = Summary {
            watermark,
            rollouts: rollouts.len(),
            by_label: BTreeMap::new(),
            routines: BTreeMap::new(),
            batches: BTreeMap::new(),
            routine_labels: rollouts
                .iter()
                .filter(|r| r.names_routines == Some(true))
                .map(|r| r.procedure.clone())
                .collect(),
            routineless_in_batches: HashSet::new(),
            deploy_durations: duration_family(),
            rollback_durations: duration_family(),
        };
        let (deploys, mut rollbacks): (Vec<_>, Vec<_>) =
            rollouts.iter().partition(|r| r.kind != "rollback");
        rollbacks.sort_by(|a, b| {
            (a.created_at_unix_ms, &a.rollout_id).cmp(&(b.created_at_unix_ms, &b.rollout_id))
        });
        for rollout in deploys.into_iter().chain(rollbacks) {
            // In this order no change is out of order: every deploy comes
            // before the first rollback, rollbacks in `compute`'s order.
            let _ = summary.add(rollout);
        }
        Ok(summary)
    }

    /// Counts a rollout that finished, in both views.
    fn add(&mut self, rollout: &FinishedRollout) -> Result<(), OutOfOrder> {
        let label = rollout.procedure.clone();
        let environment = rollout.environment.clone();
        self.by_label
            .entry((label.clone(), environment.clone()))
            .or_default()
            .add(rollout)?;
        let names_routine = match rollout.names_routines {
            Some(true) => {
                if self.routine_labels.insert(label.clone())
                    && self.routineless_in_batches.contains(&label)
                {
                    return Err(OutOfOrder);
                }
                true
            }
            Some(false) => false,
            None if self.routine_labels.contains(&label) => true,
            None => {
                self.routineless_in_batches.insert(label.clone());
                false
            }
        };
        let group = if names_routine {
            self.routines
                .entry((label, environment.clone()))
                .or_default()
        } else {
            self.batches.entry(environment.clone()).or_default()
        };
        group.add(rollout)?;
        let seconds =
            (rollout.finished_at_unix_ms - rollout.created_at_unix_ms).max(0) as f64 / 1000.0;
        match (rollout.kind.as_str(), names_routine) {
            ("rollback", _) => self
                .rollback_durations
                .get_or_create(&vec![("environment", environment)])
                .observe(seconds),
            ("deploy", routine) => self
                .deploy_durations
                .get_or_create(&vec![
                    ("environment", environment),
                    ("kind", if routine { "deploy" } else { "batch" }.to_owned()),
                ])
                .observe(seconds),
            _ => {}
        }
        Ok(())
    }

    /// Whether `/metrics` counts `rollout` with its routine (else with the
    /// batches), as `classify` decides.
    fn names_routine(&self, rollout: &FinishedRollout) -> bool {
        rollout
            .names_routines
            .unwrap_or_else(|| self.routine_labels.contains(&rollout.procedure))
    }

    /// A counted deploy whose state changed (its exit code and end did not).
    fn restate(&mut self, deploy: &FinishedRollout, was_bad: bool) -> Result<(), OutOfOrder> {
        match (was_bad, is_bad(deploy)) {
            (false, true) => {}
            (true, false) => return Err(OutOfOrder),
            _ => return Ok(()),
        }
        let key = (deploy.procedure.clone(), deploy.environment.clone());
        self.by_label
            .get_mut(&key)
            .ok_or(OutOfOrder)?
            .add_bad(deploy)?;
        let group = if self.names_routine(deploy) {
            self.routines.get_mut(&key)
        } else {
            self.batches.get_mut(&deploy.environment)
        };
        group.ok_or(OutOfOrder)?.add_bad(deploy)
    }

    /// Applies what changed since the last scrape.
    async fn catch_up(&mut self, store: &Store) -> Result<Result<(), OutOfOrder>, StoreError> {
        let changes = store.rollout_changes_since(self.watermark).await?;
        self.watermark = changes.watermark;
        Ok(self.apply(changes.changes))
    }

    fn apply(&mut self, changes: Vec<RolloutChange>) -> Result<(), OutOfOrder> {
        let mut new_rollbacks = Vec::new();
        for change in changes {
            if change.forced {
                return Err(OutOfOrder);
            }
            if !matches!(change.kind.as_str(), "deploy" | "rollback") {
                continue;
            }
            match (change.was, change.now) {
                (None, None) => {}
                (None, Some(now)) if now.kind == "rollback" => new_rollbacks.push(now),
                (None, Some(now)) => self.add(&now)?,
                (Some(was), Some(now))
                    if was.exit_code == now.exit_code
                        && was.finished_at_unix_ms == now.finished_at_unix_ms =>
                {
                    if now.kind == "deploy" {
                        let was_bad = was.exit_code != 0 || was.state == state::ROLLED_BACK;
                        self.restate(&now, was_bad)?;
                    }
                }
                (Some(_), _) => return Err(OutOfOrder),
            }
        }
        new_rollbacks.sort_by(|a, b| {
            (a.created_at_unix_ms, &a.rollout_id).cmp(&(b.created_at_unix_ms, &b.rollout_id))
        });
        for rollback in &new_rollbacks {
            self.add(rollback)?;
        }
        Ok(())
    }
}

/// A store's summary, and how often it was built and brought up to date
/// (tests check that the incremental path is the one taken).
#[derive(Default)]
struct Kept {
    summary: Option<Summary>,
    builds: u64,
    catch_ups: u64,
}

type Slot = Arc<tokio::sync::Mutex<Kept>>;

fn slot(store: &Store) -> Slot {
    static SUMMARIES: Mutex<Option<HashMap<u64, Slot>>> = Mutex::new(None);
    let mut summaries = SUMMARIES.lock().unwrap_or_else(|p| p.into_inner());
    summaries
        .get_or_insert_with(HashMap::new)
        .entry(store.instance())
        .or_default()
        .clone()
}

/// How often the store's summary was built from the whole history, and
/// brought up to date from the change log.
#[cfg(test)]
pub async fn counts(store: &Store) -> (u64, u64) {
    let kept = slot(store);
    let kept = kept.lock().await;
    (kept.builds, kept.catch_ups)
}

/// Runs `read` on the store's summary, brought up to date first (built on
/// first use). One scrape at a time per store updates it.
pub async fn with_summary<T>(
    store: &Store,
    read: impl FnOnce(&Summary) -> T,
) -> Result<T, StoreError> {
    let slot = slot(store);
    let mut guard = slot.lock().await;
    // Taken out while it is brought up to date: a failure leaves none
    // behind, and the next scrape builds it again.
    let caught_up = match guard.summary.take() {
        Some(mut summary) => match summary.catch_up(store).await? {
            Ok(()) => Some(summary),
            Err(OutOfOrder) => None,
        },
        None => None,
    };
    let summary = match caught_up {
        Some(summary) => {
            guard.catch_ups += 1;
            summary
        }
        None => {
            guard.builds += 1;
            let started = std::time::Instant::now();
            let summary = Summary::build(store).await?;
            // What a start or an out-of-order change costs (read by
            // tests/tests/history_cost.rs and the benchmark).
            tracing::info!(
                rollouts = summary.rollouts,
                build_us = started.elapsed().as_micros() as u64,
                "metrics: summary built from the store"
            );
            summary
        }
    };
    let answer = read(&summary);
    guard.summary = Some(summary);
    Ok(answer)
}
