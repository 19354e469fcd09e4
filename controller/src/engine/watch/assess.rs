//! What a sample means: each routine's mean time per call since the baseline
//! against its mean before it, the probes that started failing, and what the
//! watch cannot see. Pure functions of the stored watch and its samples, so
//! every verdict can be checked without a database.
//!
//! Semantics (README "Post-deploy watch"):
//! - The baseline is the sample taken when the watch is created, before the
//!   deploy. A routine's baseline mean is `total_time / calls` as
//!   `pg_stat_user_functions` held them then (everything since the last
//!   statistics reset); its mean since the baseline is the growth of both
//!   counters since. When the routine was dropped and created again (a new
//!   oid) or the statistics were reset (counters went down), the current
//!   counters are all "since the baseline".
//! - A routine is slow when at least `min_calls` calls were counted since the
//!   baseline, and their mean exceeds the baseline mean by the threshold
//!   percentage *and* by at least `min_increase` (sub-millisecond means are
//!   noise: planning, caches, a context switch).
//! - With `--max-time`, a routine is also slow when at least `min_calls`
//!   calls were counted since the baseline and their mean exceeds that
//!   bound — with or without a baseline, so a routine that had no calls
//!   before the deploy (a brand-new one) is watched for speed too.
//! - A probe (a smoke test run in a rolled-back transaction) is failing when
//!   it fails after having passed in an earlier sample of this watch: before
//!   the deploy a new routine does not exist yet, and an old version may fail
//!   the new version's test; neither is news.
//! - The watch is blind when track_functions is off, or when
//!   [`BLIND_AFTER_FAILED_SAMPLES`] sample attempts in a row failed.

use std::collections::BTreeSet;

use pgrollout_shared::proto::{RoutineComparison, SmokeReport, WatchSample};

use crate::store::WatchRecord;

/// Failed sample attempts in a row before the watch says it is blind (one
/// failure is often a reconnecting agent).
pub const BLIND_AFTER_FAILED_SAMPLES: u32 = 3;

pub const WATCHING: &str = "watching";
pub const ALERTING: &str = "alerting";
pub const BLIND: &str = "blind";

/// The comparison limits of one watch.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub threshold_percent: u32,
    pub min_calls: u64,
    pub min_increase_us: u64,
    /// `--max-time` in microseconds; 0: none.
    pub max_time_us: u64,
}

impl Limits {
    pub fn of(watch: &WatchRecord) -> Limits {
        Limits {
            threshold_percent: watch.threshold_percent,
            min_calls: watch.min_calls,
            min_increase_us: watch.min_increase_us,
            max_time_us: watch.max_time_us,
        }
    }
}

/// Each routine of `current` against its baseline.
pub fn compare(
    baseline: &WatchSample,
    current: &WatchSample,
    limits: Limits,
) -> Vec<RoutineComparison> {
    current
        .functions
        .iter()
        .map(|now| {
            let before = baseline
                .functions
                .iter()
                .find(|b| b.identity == now.identity && b.has_stats);
            let (baseline_calls, baseline_time) = before
                .map(|b| (b.calls.max(0) as u64, b.total_time_ms))
                .unwrap_or((0, 0.0));
            let (calls, time) = (now.calls.max(0) as u64, now.total_time_ms);
            let same_counters = before.is_some_and(|b| b.oid == now.oid) && calls >= baseline_calls;
            let (calls_since, time_since) = if same_counters {
                (calls - baseline_calls, (time - baseline_time).max(0.0))
            } else {
                (calls, time)
            };
            let baseline_mean_ms = if baseline_calls > 0 {
                baseline_time / baseline_calls as f64
            } else {
                0.0
            };
            let mean_since_ms = if calls_since > 0 {
                time_since / calls_since as f64
            } else {
                0.0
            };
            let comparable =
                baseline_calls > 0 && calls_since > 0 && calls_since >= limits.min_calls;
            let percent_of_baseline = if comparable && baseline_mean_ms > 0.0 {
                mean_since_ms / baseline_mean_ms * 100.0
            } else {
                0.0
            };
            let over_threshold =
                mean_since_ms > baseline_mean_ms * f64::from(limits.threshold_percent) / 100.0;
            let over_floor =
                (mean_since_ms - baseline_mean_ms) * 1000.0 >= limits.min_increase_us as f64;
            let over_max_time = limits.max_time_us > 0
                && calls_since > 0
                && calls_since >= limits.min_calls
                && mean_since_ms * 1000.0 > limits.max_time_us as f64;
            RoutineComparison {
                identity: now.identity.clone(),
                has_baseline: baseline_calls > 0,
                baseline_calls,
                baseline_mean_ms,
                calls_since,
                mean_since_ms,
                percent_of_baseline,
                slow: (comparable && over_threshold && over_floor) || over_max_time,
                over_max_time,
            }
        })
        .collect()
}

/// A probe's key: routine and test.
pub fn probe_key(report: &SmokeReport) -> String {
    format!("{} · {}", report.routine, report.test)
}

/// The first failed check of a probe, as `check: detail`.
fn failure_of(report: &SmokeReport) -> String {
    report
        .checks
        .iter()
        .find(|c| !c.passed)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .unwrap_or_else(|| "failed".to_owned())
}

/// One open condition: a stable key (`slow <identity>`, `failing <probe>`,
/// `blind track_functions`, `blind sampling`) and the sentence that says it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Condition {
    pub key: String,
    pub sentence: String,
}

impl Condition {
    fn new(key: impl Into<String>, sentence: impl Into<String>) -> Self {
        Condition {
            key: key.into(),
            sentence: sentence.into(),
        }
    }

    /// One line of the store's `conditions` column: `key<TAB>sentence`.
    pub fn encode(&self) -> String {
        format!("{}\t{}", self.key, self.sentence.replace(['\n', '\t'], " "))
    }

    pub fn decode(line: &str) -> Condition {
        let (key, sentence) = line.split_once('\t').unwrap_or((line, line));
        Condition::new(key, sentence)
    }

    /// Slow or failing, as opposed to blind.
    pub fn is_alert(&self) -> bool {
        self.key.starts_with("slow ") || self.key.starts_with("failing ")
    }
}

/// The verdict after one sample attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub state: &'static str,
    pub reason: String,
    /// Open conditions, sorted by key.
    pub conditions: Vec<Condition>,
    pub probes_passed: Vec<String>,
}

impl Verdict {
    /// Conditions that were not open before: what to notify about.
    pub fn new_conditions(&self, before: &[Condition]) -> Vec<&Condition> {
        self.conditions
            .iter()
            .filter(|c| !before.iter().any(|b| b.key == c.key))
            .collect()
    }

    /// The conditions as the store keeps them.
    pub fn encoded_conditions(&self) -> Vec<String> {
        self.conditions.iter().map(Condition::encode).collect()
    }
}

/// The open conditions of a stored watch.
pub fn conditions_of(watch: &WatchRecord) -> Vec<Condition> {
    watch
        .conditions
        .iter()
        .map(|l| Condition::decode(l))
        .collect()
}

/// The verdict on a fresh sample of `watch` (or on its baseline, when it is
/// being created).
pub fn assess_sample(watch: &WatchRecord, sample: &WatchSample) -> Verdict {
    let limits = Limits::of(watch);
    let mut passed_before: BTreeSet<String> = watch.probes_passed.iter().cloned().collect();
    let mut found = Vec::new();
    if sample.track_functions == "none" {
        found.push(Condition::new(
            "blind track_functions",
            format!("{TRACK_FUNCTIONS_OFF}: PostgreSQL counts no calls, so the watch cannot see how fast they are"),
        ));
    }
    for routine in compare(&watch.baseline, sample, limits) {
        if routine.over_max_time
            && !(routine.has_baseline
                && routine.percent_of_baseline > f64::from(limits.threshold_percent))
        {
            found.push(Condition::new(
                format!("slow {}", routine.identity),
                format!(
                    "{} takes {} per call over {} call(s) since the baseline, over the --max-time bound of {}",
                    routine.identity,
                    format_ms(routine.mean_since_ms),
                    routine.calls_since,
                    format_ms(limits.max_time_us as f64 / 1000.0)
                ),
            ));
        } else if routine.slow {
            found.push(Condition::new(
                format!("slow {}", routine.identity),
                format!(
                    "{} takes {} per call over {} call(s) since the baseline, {:.0}% of its baseline {} (threshold {}%)",
                    routine.identity,
                    format_ms(routine.mean_since_ms),
                    routine.calls_since,
                    routine.percent_of_baseline,
                    format_ms(routine.baseline_mean_ms),
                    limits.threshold_percent
                ),
            ));
        }
    }
    for report in &sample.probes {
        let key = probe_key(report);
        if report.passed {
            passed_before.insert(key);
        } else if passed_before.contains(&key) {
            found.push(Condition::new(
                format!("failing {key}"),
                format!(
                    "calls fail: probe {key} passed before and now fails — {}",
                    failure_of(report)
                ),
            ));
        }
    }
    verdict(found, passed_before.into_iter().collect())
}

/// The verdict after a sample attempt that failed: the open conditions
/// stand, and after [`BLIND_AFTER_FAILED_SAMPLES`] in a row the watch is
/// blind.
pub fn assess_failed_attempt(watch: &WatchRecord, failed_in_a_row: u32, error: &str) -> Verdict {
    let mut found: Vec<Condition> = conditions_of(watch)
        .into_iter()
        .filter(|c| c.key != "blind sampling")
        .collect();
    if failed_in_a_row >= BLIND_AFTER_FAILED_SAMPLES {
        found.push(Condition::new(
            "blind sampling",
            format!("the last {failed_in_a_row} samples could not be taken: {error}"),
        ));
    }
    if found.is_empty() {
        // Too early to say: the last verdict stands.
        return Verdict {
            state: WATCHING,
            reason: watch.reason.clone(),
            conditions: Vec::new(),
            probes_passed: watch.probes_passed.clone(),
        };
    }
    verdict(found, watch.probes_passed.clone())
}

/// What the CLI and the notifications say when track_functions is off.
pub const TRACK_FUNCTIONS_OFF: &str = "track_functions is off on the target database";

/// How to turn it on, for messages that ask the operator to.
pub const TRACK_FUNCTIONS_FIX: &str = "turn it on as a superuser (`ALTER SYSTEM SET track_functions = 'pl'` — or 'all' for \
     SQL-language functions — then `SELECT pg_reload_conf()`, or `ALTER DATABASE … SET track_functions = 'pl'`)";

fn verdict(mut found: Vec<Condition>, probes_passed: Vec<String>) -> Verdict {
    found.sort();
    found.dedup_by(|a, b| a.key == b.key);
    let state = match (found.iter().any(Condition::is_alert), found.is_empty()) {
        (true, _) => ALERTING,
        (false, false) => BLIND,
        (false, true) => WATCHING,
    };
    let reason = if found.is_empty() {
        "no routine slower than its baseline by the threshold; no probe that passed is failing"
            .to_owned()
    } else {
        found
            .iter()
            .map(|c| c.sentence.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    Verdict {
        state,
        reason,
        conditions: found,
        probes_passed,
    }
}

/// What the watch cannot see, for `alert create` and `alert list`.
pub fn notes(watch: &WatchRecord, latest: &WatchSample) -> Vec<String> {
    let mut notes = Vec::new();
    if latest.track_functions == "none" {
        notes.push(format!("{TRACK_FUNCTIONS_OFF}: {TRACK_FUNCTIONS_FIX}"));
    }
    for function in &latest.functions {
        if latest.track_functions == "pl"
            && matches!(function.language.as_str(), "sql" | "c" | "internal")
        {
            notes.push(format!(
                "{} is LANGUAGE {}: track_functions = pl does not count it; set it to 'all' to watch its speed",
                function.identity, function.language
            ));
        }
    }
    for routine in compare(&watch.baseline, latest, Limits::of(watch)) {
        if !routine.has_baseline {
            notes.push(if watch.max_time_us > 0 {
                format!(
                    "{} had no recorded calls when the watch was created: no pre-deploy baseline, so its speed is held to --max-time {} per call",
                    routine.identity,
                    format_ms(watch.max_time_us as f64 / 1000.0)
                )
            } else {
                format!(
                    "{} had no recorded calls when the watch was created: no pre-deploy baseline, so only failing calls are watched \
                     (create the watch with --max-time to bound its time per call)",
                    routine.identity
                )
            });
        }
    }
    if latest.functions.is_empty() {
        // Seen before (at the baseline, or a probe of it passed): it was
        // dropped since, not "not deployed yet".
        let existed = !watch.baseline.functions.is_empty() || !watch.probes_passed.is_empty();
        notes.push(if existed {
            format!(
                "no routine named {} exists in the target any more: it was dropped after the watch saw it",
                names(watch)
            )
        } else {
            format!(
                "no routine named {} exists in the target yet: statistics start once it is deployed; {}",
                names(watch),
                if watch.max_time_us > 0 {
                    format!(
                        "with no baseline, its speed is held to --max-time {} per call",
                        format_ms(watch.max_time_us as f64 / 1000.0)
                    )
                } else {
                    "with no baseline, only failing calls are watched (create the watch with --max-time to bound its time per call)".to_owned()
                }
            )
        });
    }
    let passed: BTreeSet<&String> = watch.probes_passed.iter().collect();
    for report in &latest.probes {
        let key = probe_key(report);
        if report.checks.len() == 1 && report.test.starts_with("(no smoke test") {
            notes.push(format!(
                "{} declares no smoke test: the probe only checks that it exists",
                report.routine
            ));
        }
        if !report.passed && !passed.contains(&key) {
            notes.push(format!(
                "probe {key} fails and has not passed since the watch was created (not an alert: it may be the version before the deploy) — {}",
                failure_of(report)
            ));
        }
    }
    if !latest.probes.is_empty() && !latest.probe_calls_excluded {
        notes.push(
            "the agent's role may not SET track_functions, so each probe call is counted in the statistics too".to_owned(),
        );
    }
    notes
}

/// `public.addarc, public.removearc`.
pub fn names(watch: &WatchRecord) -> String {
    watch
        .spec
        .names
        .iter()
        .map(|n| format!("{}.{}", n.schema, n.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `0.85 ms`, `52.1 ms`, `1.20 s`.
pub fn format_ms(ms: f64) -> String {
    match ms {
        ms if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        ms if ms >= 10.0 => format!("{ms:.1} ms"),
        ms => format!("{ms:.3} ms"),
    }
}

#[cfg(test)]
mod tests {
    use pgrollout_shared::proto::{FunctionStats, SmokeCheck};

    use super::*;

    fn stats(identity: &str, oid: u32, calls: i64, total_time_ms: f64) -> FunctionStats {
        FunctionStats {
            identity: identity.into(),
            oid,
            language: "plpgsql".into(),
            has_stats: true,
            calls,
            total_time_ms,
            self_time_ms: total_time_ms,
        }
    }

    fn sample(functions: Vec<FunctionStats>, probes: Vec<SmokeReport>) -> WatchSample {
        WatchSample {
            sampled_at_unix_ms: 1,
            track_functions: "all".into(),
            functions,
            probes,
            probe_calls_excluded: true,
        }
    }

    fn probe(passed: bool) -> SmokeReport {
        SmokeReport {
            routine: "public.f(integer)".into(),
            test: "adds".into(),
            phase: "watch".into(),
            checks: vec![SmokeCheck {
                check: "executes".into(),
                passed,
                detail: if passed {
                    "returned 1 row(s)"
                } else {
                    "ERROR 42P01: relation \"t\" does not exist"
                }
                .into(),
            }],
            passed,
            duration_ms: 1,
        }
    }

    fn keys(verdict: &Verdict) -> Vec<&str> {
        verdict.conditions.iter().map(|c| c.key.as_str()).collect()
    }

    fn watch(baseline: WatchSample) -> WatchRecord {
        WatchRecord {
            threshold_percent: 120,
            min_calls: 10,
            min_increase_us: 1_000,
            state: WATCHING.into(),
            baseline,
            ..Default::default()
        }
    }

    #[test]
    fn the_mean_since_the_baseline_is_compared_with_the_mean_before() {
        let w = watch(sample(
            vec![stats("public.f(integer)", 7, 100, 200.0)],
            vec![],
        ));
        // 20 more calls, 1000 ms more: 50 ms per call against 2 ms.
        let slow = sample(vec![stats("public.f(integer)", 7, 120, 1200.0)], vec![]);
        let [compared] = compare(&w.baseline, &slow, Limits::of(&w))
            .try_into()
            .expect("one");
        assert_eq!((compared.calls_since, compared.mean_since_ms), (20, 50.0));
        assert_eq!(compared.baseline_mean_ms, 2.0);
        assert_eq!(compared.percent_of_baseline, 2500.0);
        assert!(compared.slow);
        let verdict = assess_sample(&w, &slow);
        assert_eq!(verdict.state, ALERTING);
        assert_eq!(keys(&verdict), ["slow public.f(integer)"]);
        assert_eq!(
            verdict.reason,
            "public.f(integer) takes 50.0 ms per call over 20 call(s) since the baseline, 2500% of its baseline 2.000 ms (threshold 120%)"
        );

        // Same speed: quiet.
        let steady = sample(vec![stats("public.f(integer)", 7, 120, 240.0)], vec![]);
        assert_eq!(assess_sample(&w, &steady).state, WATCHING);
        // Slower, but over too few calls to say.
        let few = sample(vec![stats("public.f(integer)", 7, 105, 500.0)], vec![]);
        assert_eq!(assess_sample(&w, &few).state, WATCHING);
        // 150% of 0.01 ms is below the noise floor.
        let tiny = watch(sample(
            vec![stats("public.f(integer)", 7, 100, 1.0)],
            vec![],
        ));
        let tiny_later = sample(vec![stats("public.f(integer)", 7, 200, 2.5)], vec![]);
        assert_eq!(assess_sample(&tiny, &tiny_later).state, WATCHING);
    }

    #[test]
    fn max_time_watches_a_routine_without_a_baseline() {
        // Created before the routine existed: no baseline at all.
        let w = WatchRecord {
            max_time_us: 20_000,
            min_calls: 3,
            ..watch(sample(vec![], vec![]))
        };
        let fast = sample(vec![stats("public.f(integer)", 7, 3, 15.0)], vec![]);
        assert_eq!(assess_sample(&w, &fast).state, WATCHING);
        let slow = sample(vec![stats("public.f(integer)", 7, 3, 150.0)], vec![]);
        let verdict = assess_sample(&w, &slow);
        assert_eq!(verdict.state, ALERTING);
        assert_eq!(
            verdict.reason,
            "public.f(integer) takes 50.0 ms per call over 3 call(s) since the baseline, over the --max-time bound of 20.0 ms"
        );
        // Without --max-time it cannot see it, and says so.
        let blind = watch(sample(vec![], vec![]));
        assert_eq!(assess_sample(&blind, &slow).state, WATCHING);
        assert!(notes(&blind, &slow)
            .iter()
            .any(|n| n.contains("create the watch with --max-time")));
        assert!(notes(&w, &slow)
            .iter()
            .any(|n| n.contains("held to --max-time 20.0 ms per call")));
    }

    #[test]
    fn a_routine_dropped_after_the_baseline_is_gone_not_yet_to_come() {
        let existed = watch(sample(vec![stats("public.f(integer)", 7, 3, 15.0)], vec![]));
        let gone = sample(vec![], vec![]);
        assert!(notes(&existed, &gone).iter().any(
            |n| n.ends_with("exists in the target any more: it was dropped after the watch saw it")
        ));
        let never = watch(sample(vec![], vec![]));
        assert!(notes(&never, &gone)
            .iter()
            .any(|n| n.contains("exists in the target yet")));
    }

    #[test]
    fn a_recreated_routine_or_reset_statistics_count_from_zero() {
        let w = watch(sample(
            vec![stats("public.f(integer)", 7, 100, 200.0)],
            vec![],
        ));
        // DROP + CREATE: a new oid, counters from zero.
        let recreated = sample(vec![stats("public.f(integer)", 8, 20, 1000.0)], vec![]);
        let [c] = compare(&w.baseline, &recreated, Limits::of(&w))
            .try_into()
            .expect("one");
        assert_eq!((c.calls_since, c.mean_since_ms, c.slow), (20, 50.0, true));
        // pg_stat_reset(): the counters went down.
        let reset = sample(vec![stats("public.f(integer)", 7, 30, 60.0)], vec![]);
        let [c] = compare(&w.baseline, &reset, Limits::of(&w))
            .try_into()
            .expect("one");
        assert_eq!((c.calls_since, c.mean_since_ms, c.slow), (30, 2.0, false));
    }

    #[test]
    fn only_a_probe_that_passed_before_can_start_failing() {
        let w = watch(sample(vec![], vec![probe(false)]));
        // Failing since the baseline (say, the routine is not deployed yet).
        let verdict = assess_sample(&w, &sample(vec![], vec![probe(false)]));
        assert_eq!(verdict.state, WATCHING);
        assert!(verdict.probes_passed.is_empty());
        // Deployed: it passes, and is remembered.
        let verdict = assess_sample(&w, &sample(vec![], vec![probe(true)]));
        assert_eq!(verdict.probes_passed, ["public.f(integer) · adds"]);
        // Then it fails: an alert.
        let armed = WatchRecord {
            probes_passed: verdict.probes_passed.clone(),
            ..w.clone()
        };
        let verdict = assess_sample(&armed, &sample(vec![], vec![probe(false)]));
        assert_eq!(verdict.state, ALERTING);
        assert_eq!(keys(&verdict), ["failing public.f(integer) · adds"]);
        assert!(
            verdict.reason.contains("relation \"t\" does not exist"),
            "{}",
            verdict.reason
        );
        assert_eq!(verdict.new_conditions(&[]).len(), 1);
        assert!(verdict.new_conditions(&verdict.conditions).is_empty());
        // Stored and read back, the condition keeps its sentence.
        let stored = WatchRecord {
            conditions: verdict.encoded_conditions(),
            ..armed
        };
        assert_eq!(conditions_of(&stored), verdict.conditions);
    }

    #[test]
    fn track_functions_off_and_failed_samples_make_the_watch_blind() {
        let w = watch(sample(vec![], vec![]));
        let off = WatchSample {
            track_functions: "none".into(),
            ..sample(vec![], vec![])
        };
        let verdict = assess_sample(&w, &off);
        assert_eq!(verdict.state, BLIND);
        assert_eq!(keys(&verdict), ["blind track_functions"]);
        assert!(notes(&w, &off)[0]
            .starts_with("track_functions is off on the target database: turn it on"));

        let once = assess_failed_attempt(&w, 1, "no agent");
        assert_eq!(once.state, WATCHING);
        let blind = assess_failed_attempt(&w, 3, "no agent connected for zone prod");
        assert_eq!(blind.state, BLIND);
        assert_eq!(
            blind.reason,
            "the last 3 samples could not be taken: no agent connected for zone prod"
        );
        // An open alert stays open while samples fail.
        let alerting = WatchRecord {
            state: ALERTING.into(),
            conditions: vec![
                "slow public.f(integer)\tpublic.f(integer) takes 50.0 ms; really".into(),
            ],
            reason: "public.f(integer) takes 50.0 ms; really".into(),
            ..w
        };
        let verdict = assess_failed_attempt(&alerting, 1, "no agent");
        assert_eq!(verdict.state, ALERTING);
        assert_eq!(verdict.reason, "public.f(integer) takes 50.0 ms; really");
    }
}
