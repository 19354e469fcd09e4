//! The summary against the definitions: a seeded random history written
//! through the store's API — deploys and rollbacks that overlap and finish
//! out of creation order, batches, rollbacks marking deploys rolled back,
//! jobs in doubt resolved later — read by the summary at random moments, and
//! each time compared with [`compute`] over the whole history (and, for the
//! Prometheus view, with the classification as it was computed before the
//! summary existed).

use std::collections::{BTreeMap, HashSet};

use pgrollout_shared::proto::{JobResult, Outcome, Plan, Routine};

use super::summary::with_summary;
use super::*;
use crate::domain::agent_report::ReportedResult;
use crate::store::NewRollout;

/// A tiny deterministic generator (no dependency for a test).
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn routine(name: &str) -> Routine {
    Routine {
        schema: "public".into(),
        name: name.into(),
        create_sql: format!("CREATE FUNCTION {name}() …"),
        ..Routine::default()
    }
}

struct Open {
    rollout_id: String,
    job_id: String,
    kind: &'static str,
    label: String,
    environment: &'static str,
}

/// The Prometheus view as `/metrics` computed it from the whole history
/// before the summary: plans that name their routines by routine, the rest
/// as batches; a routine-less plan by its label when a routine deploy of that
/// label was counted.
async fn reference_view(
    store: &Store,
    rollouts: Vec<FinishedRollout>,
) -> (Vec<ProcedureFigures>, Vec<ProcedureFigures>) {
    // Decided from the stored plans themselves, not from the column the
    // summary reads (`plans.names_routines`), which must agree.
    let plans: std::collections::HashMap<String, Option<bool>> = store
        .plan_labels_name_routines(rollouts.iter().map(|r| r.plan_id.clone()).collect())
        .await
        .expect("plans")
        .into_iter()
        .collect();
    for rollout in &rollouts {
        assert_eq!(
            rollout.names_routines, plans[&rollout.plan_id],
            "plans.names_routines of {}",
            rollout.plan_id
        );
    }
    let routine_labels: HashSet<String> = rollouts
        .iter()
        .filter(|r| plans[&r.plan_id] == Some(true))
        .map(|r| r.procedure.clone())
        .collect();
    let (mut routines, mut batches) = (Vec::new(), Vec::new());
    for mut rollout in rollouts {
        let names = plans[&rollout.plan_id].unwrap_or(routine_labels.contains(&rollout.procedure));
        if names {
            routines.push(rollout);
        } else {
            rollout.procedure.clear();
            batches.push(rollout);
        }
    }
    (compute(&routines), compute(&batches))
}

async fn assert_summary_matches(store: &Store, step: usize) {
    let all = store
        .finished_deploys_and_rollbacks("", "")
        .await
        .expect("read");
    let (routines, batches) = reference_view(store, all.clone()).await;
    let (by_label, summary_routines, summary_batches, histogram_count) = with_summary(store, |s| {
        let count: u64 = ["dev", "qa"]
            .iter()
            .flat_map(|e| ["deploy", "batch"].map(|k| (*e, k)))
            .map(|(e, k)| {
                let labels = vec![("environment", e.to_owned()), ("kind", k.to_owned())];
                histogram_samples(&s.deploy_durations, &labels)
            })
            .sum::<u64>()
            + ["dev", "qa"]
                .iter()
                .map(|e| {
                    histogram_samples(
                        &s.rollback_durations,
                        &vec![("environment", (*e).to_owned())],
                    )
                })
                .sum::<u64>();
        (
            s.by_label("", ""),
            s.routine_figures(),
            s.batch_figures(),
            count,
        )
    })
    .await
    .expect("summary");
    assert_eq!(by_label, compute(&all), "by label, after step {step}");
    assert_eq!(summary_routines, routines, "routines, after step {step}");
    assert_eq!(summary_batches, batches, "batches, after step {step}");
    assert_eq!(
        histogram_count,
        all.len() as u64,
        "observations, after step {step}"
    );
    let filtered = with_summary(store, |s| s.by_label("r1", "qa"))
        .await
        .expect("summary");
    assert_eq!(
        filtered,
        compute(
            &store
                .finished_deploys_and_rollbacks("r1", "qa")
                .await
                .expect("read")
        ),
        "filtered, after step {step}"
    );
}

/// How many observations one histogram of `family` holds (0 if none).
fn histogram_samples(
    family: &pgrollout_shared::metrics::DurationFamily,
    labels: &pgrollout_shared::metrics::Labels,
) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("h", "h", family.clone());
    let text = pgrollout_shared::metrics::render(&registry);
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| l.starts_with("h_count{"))
        .filter(|l| {
            wanted.iter().all(|w| l.contains(w.as_str())) && l.matches('=').count() == wanted.len()
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn the_summary_always_equals_the_definitions_over_the_whole_history() {
    for seed in [1_u64, 7, 42] {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.sqlite")).expect("store");
        let mut random = Seeded(seed);
        let mut now = 1_000_i64;
        let mut open: Vec<Open> = Vec::new();
        let mut succeeded: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
        let mut in_doubt: Vec<String> = Vec::new();
        for step in 0..400 {
            now += 1 + random.below(50) as i64;
            match random.below(10) {
                // Start a rollout.
                0..=4 => {
                    let environment = if random.below(3) == 0 { "qa" } else { "dev" };
                    let name = format!("r{}", random.below(4));
                    let (kind, plan) = match random.below(6) {
                        0 | 1 => (
                            "rollback",
                            Plan {
                                label: name.clone(),
                                ..Plan::default()
                            },
                        ),
                        2 => (
                            "deploy",
                            Plan {
                                label: format!("sprint{}", random.below(2)),
                                routines: vec![routine(&name), routine("other")],
                                ..Plan::default()
                            },
                        ),
                        _ => (
                            "deploy",
                            Plan {
                                label: name.clone(),
                                routines: vec![routine(&name)],
                                ..Plan::default()
                            },
                        ),
                    };
                    let plan = Plan {
                        plan_id: format!("{:064x}", step),
                        commit_sha: "c".repeat(40),
                        ..plan
                    };
                    store.save_plan(&plan, now).await.expect("plan");
                    let (rollout_id, job_id) = (format!("r-{step}"), format!("j-{step}"));
                    store
                        .create_rollout(
                            NewRollout {
                                id: &rollout_id,
                                plan_id: &plan.plan_id,
                                kind,
                                environment,
                                zone: environment,
                                target: "main",
                                actor: "operator t",
                                // Same instant sometimes: ties are broken by id.
                                trace_id: "t",
                                created_at: now - i64::from(random.below(4) == 0),
                            },
                            &job_id,
                            1,
                        )
                        .await
                        .expect("rollout");
                    open.push(Open {
                        rollout_id,
                        job_id,
                        kind,
                        label: plan.label.clone(),
                        environment,
                    });
                }
                // Finish one of the rollouts still running, in any order.
                5..=7 if !open.is_empty() => {
                    let done = open.remove(random.below(open.len() as u64) as usize);
                    let exit_code = if random.below(3) == 0 { 2 } else { 0 };
                    if random.below(8) == 0 {
                        store
                            .abandon_job(&done.job_id, 1, state::UNKNOWN, 2, "lost", now)
                            .await
                            .expect("abandon");
                        in_doubt.push(done.rollout_id);
                        continue;
                    }
                    let result = JobResult {
                        job_id: done.job_id.clone(),
                        attempt: 1,
                        outcome: outcome_of(exit_code),
                        ..JobResult::default()
                    };
                    store
                        .finish_job(&ReportedResult::checked(result), now)
                        .await
                        .expect("finish");
                    let key = (done.label.clone(), done.environment);
                    match (done.kind, exit_code) {
                        ("deploy", 0) => succeeded.entry(key).or_default().push(done.rollout_id),
                        // A successful rollback marks what it undid, after
                        // its own result, as the engine does.
                        ("rollback", 0) => {
                            if let Some(undone) = succeeded.get_mut(&key).and_then(|d| d.pop()) {
                                store.mark_rolled_back(&undone).await.expect("mark");
                            }
                        }
                        _ => {}
                    }
                }
                // An operator settles a rollout in doubt.
                8 if !in_doubt.is_empty() => {
                    let rollout_id = in_doubt.remove(0);
                    let verdict = if random.below(2) == 0 {
                        state::SUCCEEDED
                    } else {
                        state::FAILED
                    };
                    store
                        .resolve_rollout(&rollout_id, verdict, "checked", now)
                        .await
                        .expect("resolve");
                }
                _ => {}
            }
            if random.below(7) == 0 {
                assert_summary_matches(&store, step).await;
            }
        }
        assert_summary_matches(&store, 400).await;
        // Both paths were taken, the incremental one mostly: a rebuild per
        // scrape would pass the comparison without testing the increments.
        let (builds, catch_ups) = super::summary::counts(&store).await;
        assert!(
            builds >= 2 && catch_ups >= 2 * builds,
            "seed {seed}: {builds} builds, {catch_ups} incremental updates"
        );
    }
}

#[tokio::test]
async fn rollouts_by_state_are_counted_as_they_are_written() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("s.sqlite")).expect("store");
    let plan = Plan {
        plan_id: "ab".repeat(32),
        ..Plan::default()
    };
    store.save_plan(&plan, 1).await.expect("plan");
    for (n, kind) in ["deploy", "deploy", "rollback"].iter().enumerate() {
        store
            .create_rollout(
                NewRollout {
                    kind,
                    ..NewRollout::dev_deploy(&format!("r-{n}"), &plan.plan_id, 1)
                },
                &format!("j-{n}"),
                1,
            )
            .await
            .expect("rollout");
    }
    store
        .finish_job(
            &ReportedResult::checked(JobResult {
                job_id: "j-0".into(),
                attempt: 1,
                outcome: Outcome::Succeeded as i32,
                ..JobResult::default()
            }),
            2,
        )
        .await
        .expect("finish");
    store.mark_rolled_back("r-0").await.expect("mark");
    let counts: Vec<(String, String, u64)> = store
        .rollouts_by_state()
        .await
        .expect("counts")
        .into_iter()
        .map(|c| (c.kind, c.state, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("deploy".into(), "rolled_back".into(), 1),
            ("deploy".into(), "running".into(), 1),
            ("rollback".into(), "running".into(), 1),
        ]
    );
}

/// A change out of order — an operator resolving a deploy that was in doubt
/// since before later rollouts were counted — rebuilds the summary, and the
/// rebuild reads rollout rows only: with every stored plan's blob unreadable
/// (never read by the metrics since migration 0014) it still gives the
/// definitions' figures.
#[tokio::test]
async fn an_old_rollouts_resolve_rebuilds_from_the_rows_without_reading_a_plan() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("s.sqlite")).expect("store");
    let deploy_plan = Plan {
        plan_id: "0d".repeat(32),
        label: "f".into(),
        routines: vec![routine("f")],
        ..Plan::default()
    };
    let rollback_plan = Plan {
        plan_id: "0e".repeat(32),
        label: "f".into(),
        ..Plan::default()
    };
    store.save_plan(&deploy_plan, 1).await.expect("plan");
    store.save_plan(&rollback_plan, 1).await.expect("plan");
    let start = |n: usize, kind: &'static str, plan: &str, at: i64| {
        let store = store.clone();
        let plan = plan.to_owned();
        async move {
            store
                .create_rollout(
                    NewRollout {
                        kind,
                        ..NewRollout::dev_deploy(&format!("r-{n}"), &plan, at)
                    },
                    &format!("j-{n}"),
                    1,
                )
                .await
                .expect("rollout");
        }
    };
    let finish = |n: usize, exit_code: i32, at: i64| {
        let store = store.clone();
        async move {
            let result = JobResult {
                job_id: format!("j-{n}"),
                attempt: 1,
                outcome: outcome_of(exit_code),
                ..JobResult::default()
            };
            store
                .finish_job(&ReportedResult::checked(result), at)
                .await
                .expect("finish");
        }
    };
    // r-0: a deploy left in doubt (counted as failed) long ago.
    start(0, "deploy", &deploy_plan.plan_id, 1_000).await;
    store
        .abandon_job("j-0", 1, state::UNKNOWN, 2, "lost", 1_500)
        .await
        .expect("abandon");
    // Then many deploys, some failed, each answered by a rollback.
    for n in 1..40 {
        let at = 2_000 + 1_000 * n as i64;
        if n % 2 == 1 {
            start(n, "deploy", &deploy_plan.plan_id, at).await;
            finish(n, if n % 4 == 1 { 2 } else { 0 }, at + 100).await;
        } else {
            start(n, "rollback", &rollback_plan.plan_id, at).await;
            finish(n, 0, at + 200).await;
        }
    }
    // No plan is read from here on.
    rusqlite::Connection::open(dir.path().join("s.sqlite"))
        .and_then(|c| c.execute("UPDATE plans SET content = x'ff'", []))
        .expect("damage the plans");
    assert_summary_matches_rows(&store).await;
    let (builds, _) = super::summary::counts(&store).await;

    store
        .resolve_rollout("r-0", state::SUCCEEDED, "checked", 100_000)
        .await
        .expect("resolve");
    assert_summary_matches_rows(&store).await;
    let (after, _) = super::summary::counts(&store).await;
    assert_eq!(after, builds + 1, "the resolve rebuilt the summary once");
    let figures = with_summary(&store, |s| s.by_label("f", "dev"))
        .await
        .expect("summary");
    // 20 deploys, 10 failed, and the resolved one.
    assert_eq!(
        (figures[0].deployments, figures[0].successes),
        (21, 11),
        "{figures:?}"
    );
}

/// The summary against [`compute`] over the rows, without the reference
/// Prometheus view (which decodes the plans).
async fn assert_summary_matches_rows(store: &Store) {
    let all = store
        .finished_deploys_and_rollbacks("", "")
        .await
        .expect("read");
    let (by_label, routines) = with_summary(store, |s| (s.by_label("", ""), s.routine_figures()))
        .await
        .expect("summary");
    assert_eq!(by_label, compute(&all));
    assert_eq!(routines, compute(&all), "every plan names its routine f");
}

/// The agent's outcome behind a fixture's exit code: 0 succeeded, anything else a failed deploy.
fn outcome_of(exit_code: i32) -> i32 {
    if exit_code == 0 {
        Outcome::Succeeded as i32
    } else {
        Outcome::DeployFailed as i32
    }
}
