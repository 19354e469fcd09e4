//! What `pgrollout alert create` and `alert list` print: the watch, its
//! baseline and latest sample routine by routine, its probes, its state and
//! what it cannot see.

use std::fmt::Write;
use std::time::Duration;

use pgrollout_shared::proto::{RoutineComparison, WatchSample, WatchStatus};

use super::report::utc_timestamp;
use super::style::{mark, Mark};

/// After `alert create`: what is watched, the baseline, the notes.
pub fn created(watch: &WatchStatus) -> String {
    let mut text = format!(
        "pgrollout: watching {} in {} until {} — watch {}\n",
        watch.procedure,
        watch.environment,
        utc_timestamp(watch.ends_at_unix_ms),
        watch.watch_id
    );
    let _ = writeln!(
        text,
        "every {}: alert when a routine's mean time per call since now exceeds {}% of its baseline (and by at \
         least {}, over at least {} call(s)), or when a probe that passed starts failing",
        duration(watch.every_ms),
        watch.threshold_percent,
        humantime::format_duration(Duration::from_micros(watch.min_increase_us)),
        watch.min_calls
    );
    if watch.max_time_us > 0 {
        let _ = writeln!(
            text,
            "and when a routine's mean time per call since now exceeds {} (--max-time), baseline or not",
            humantime::format_duration(Duration::from_micros(watch.max_time_us))
        );
    }
    if let Some(baseline) = &watch.baseline {
        let _ = writeln!(
            text,
            "baseline (track_functions = {}):",
            baseline.track_functions
        );
        if baseline.functions.is_empty() {
            let _ = writeln!(
                text,
                "  no routine of {} exists yet",
                watch.names.join(", ")
            );
        }
        for function in &baseline.functions {
            let _ = writeln!(
                text,
                "  {}: {}",
                function.identity,
                calls_and_mean(function.calls, function.total_time_ms, function.has_stats)
            );
        }
        text.push_str(&probes(baseline, "probes"));
    }
    for note in &watch.notes {
        let _ = writeln!(text, "note: {note}");
    }
    let _ = writeln!(
        text,
        "alerts go to {}'s notification channels; `pgrollout alert list` shows the watch",
        watch.environment
    );
    text
}

/// One watch in `alert list`.
pub fn listed(watch: &WatchStatus) -> String {
    let mut text = format!(
        "{}  {} @ {}  {}\n",
        watch.watch_id,
        watch.procedure,
        watch.environment,
        watch.state.to_uppercase()
    );
    let until = match (watch.state.as_str(), watch.cancelled_by.as_str()) {
        ("cancelled", by) => format!("cancelled by {by} at"),
        ("ended", _) => "ended at".to_owned(),
        _ => "until".to_owned(),
    };
    let _ = writeln!(
        text,
        "  {}: every {} {until} {}, threshold {}%, created by {} at {}",
        watch.names.join(", "),
        duration(watch.every_ms),
        utc_timestamp(watch.ends_at_unix_ms),
        watch.threshold_percent,
        watch.created_by,
        utc_timestamp(watch.created_at_unix_ms)
    );
    let baseline_tracking = watch
        .baseline
        .as_ref()
        .map(|b| b.track_functions.as_str())
        .unwrap_or("?");
    match &watch.last_sample {
        Some(sample) => {
            let _ = writeln!(
                text,
                "  last sample: {} ({} since the baseline), track_functions = {} (at the baseline: {baseline_tracking})",
                utc_timestamp(sample.sampled_at_unix_ms),
                watch.samples,
                sample.track_functions
            );
        }
        None => {
            let _ = writeln!(
                text,
                "  last sample: none since the baseline, track_functions = {baseline_tracking} at the baseline"
            );
        }
    }
    for routine in &watch.routines {
        let _ = writeln!(text, "  {}", comparison(routine));
    }
    if let Some(sample) = watch.last_sample.as_ref().or(watch.baseline.as_ref()) {
        text.push_str(&probes(sample, "  probes"));
    }
    let _ = writeln!(text, "  state: {} — {}", watch.state, watch.reason);
    if !watch.sample_error.is_empty() {
        let _ = writeln!(text, "  last sample attempt failed: {}", watch.sample_error);
    }
    for note in &watch.notes {
        let _ = writeln!(text, "  note: {note}");
    }
    text
}

/// `public.f(integer): baseline 0.012 ms per call over 40 call(s); since: 50.3 ms per call over 40 call(s), 419167% — SLOW`.
fn comparison(routine: &RoutineComparison) -> String {
    let baseline = if routine.has_baseline {
        format!(
            "baseline {} per call over {} call(s)",
            ms(routine.baseline_mean_ms),
            routine.baseline_calls
        )
    } else {
        "no baseline (no calls before the watch)".to_owned()
    };
    let since = match routine.calls_since {
        0 => "no calls since".to_owned(),
        calls => format!(
            "since: {} per call over {calls} call(s)",
            ms(routine.mean_since_ms)
        ),
    };
    let verdict = match (routine.slow, routine.percent_of_baseline) {
        (true, _) if routine.over_max_time && !routine.has_baseline => {
            " — SLOW (over --max-time)".to_owned()
        }
        (true, percent) => format!(", {percent:.0}% — SLOW"),
        (false, percent) if percent > 0.0 => format!(", {percent:.0}%"),
        _ => String::new(),
    };
    format!("{}: {baseline}; {since}{verdict}", routine.identity)
}

fn probes(sample: &WatchSample, heading: &str) -> String {
    if sample.probes.is_empty() {
        return String::new();
    }
    let indent = " ".repeat(heading.len() - heading.trim_start().len() + 2);
    let mut text = format!("{heading} (smoke tests in a rolled-back transaction, each sample):\n");
    for probe in &sample.probes {
        let verdict = if probe.passed {
            format!("{} passes", mark(Mark::Ok))
        } else {
            let failed = probe
                .checks
                .iter()
                .find(|c| !c.passed)
                .map(|c| format!("{}: {}", c.check, c.detail))
                .unwrap_or_default();
            format!("{} fails — {failed}", mark(Mark::Fail))
        };
        let _ = writeln!(
            text,
            "{indent}{} · {}: {verdict}",
            probe.routine, probe.test
        );
    }
    text
}

fn calls_and_mean(calls: i64, total_time_ms: f64, has_stats: bool) -> String {
    if !has_stats || calls <= 0 {
        return "no calls recorded".to_owned();
    }
    format!(
        "{calls} call(s), {} per call",
        ms(total_time_ms / calls as f64)
    )
}

fn ms(value: f64) -> String {
    crate::engine::watch::assess::format_ms(value)
}

fn duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// A watch for `alert list --output json`: its settings, state, the
/// per-routine comparison and the latest probes.
pub fn as_json(watch: &WatchStatus) -> serde_json::Value {
    let probes = |sample: Option<&WatchSample>| -> Vec<serde_json::Value> {
        sample
            .map(|s| {
                s.probes
                    .iter()
                    .map(|p| serde_json::json!({"routine": p.routine, "test": p.test, "passed": p.passed}))
                    .collect()
            })
            .unwrap_or_default()
    };
    serde_json::json!({
        "watch": watch.watch_id,
        "environment": watch.environment,
        "procedure": watch.procedure,
        "names": watch.names,
        "state": watch.state.to_lowercase(),
        "reason": watch.reason,
        "created_by": watch.created_by,
        "created_at_unix_ms": watch.created_at_unix_ms,
        "ends_at_unix_ms": watch.ends_at_unix_ms,
        "every_ms": watch.every_ms,
        "threshold_percent": watch.threshold_percent,
        "min_calls": watch.min_calls,
        "samples": watch.samples,
        "has_baseline": watch.baseline.is_some(),
        "last_sampled_at_unix_ms": watch.last_sample.as_ref().map(|s| s.sampled_at_unix_ms),
        "routines": watch.routines.iter().map(|r| serde_json::json!({
            "identity": r.identity,
            "has_baseline": r.has_baseline,
            "baseline_calls": r.baseline_calls,
            "baseline_mean_ms": r.baseline_mean_ms,
            "calls_since": r.calls_since,
            "mean_since_ms": r.mean_since_ms,
            "percent_of_baseline": r.percent_of_baseline,
            "slow": r.slow,
            "over_max_time": r.over_max_time,
        })).collect::<Vec<_>>(),
        "probes": probes(watch.last_sample.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use pgrollout_shared::proto::{FunctionStats, SmokeCheck, SmokeReport};

    use super::*;

    #[test]
    fn a_slow_routine_and_a_failing_probe_read_plainly() {
        let sample = WatchSample {
            sampled_at_unix_ms: 1_763_044_200_000,
            track_functions: "all".into(),
            functions: vec![FunctionStats {
                identity: "public.f(integer)".into(),
                has_stats: true,
                calls: 40,
                total_time_ms: 0.48,
                ..Default::default()
            }],
            probes: vec![SmokeReport {
                routine: "public.f(integer)".into(),
                test: "adds".into(),
                checks: vec![SmokeCheck {
                    check: "executes".into(),
                    passed: false,
                    detail: "ERROR 42P01: no table".into(),
                }],
                ..Default::default()
            }],
            probe_calls_excluded: true,
        };
        let watch = WatchStatus {
            watch_id: "w-1".into(),
            environment: "prod".into(),
            procedure: "f".into(),
            names: vec!["public.f".into()],
            created_by: "alice".into(),
            created_at_unix_ms: 1_763_044_000_000,
            ends_at_unix_ms: 1_763_130_400_000,
            every_ms: 60_000,
            threshold_percent: 120,
            min_calls: 10,
            min_increase_us: 1_000,
            state: "alerting".into(),
            reason: "public.f(integer) takes 50.0 ms per call".into(),
            baseline: Some(sample.clone()),
            last_sample: Some(sample.clone()),
            samples: 3,
            routines: vec![RoutineComparison {
                identity: "public.f(integer)".into(),
                has_baseline: true,
                baseline_calls: 40,
                baseline_mean_ms: 0.012,
                calls_since: 40,
                mean_since_ms: 50.0,
                percent_of_baseline: 416_666.7,
                slow: true,
                over_max_time: false,
            }],
            ..Default::default()
        };
        let text = listed(&watch);
        assert!(text.starts_with("w-1  f @ prod  ALERTING\n"), "{text}");
        assert!(
            text.contains("  public.f(integer): baseline 0.012 ms per call over 40 call(s); since: 50.0 ms per call over 40 call(s), 416667% — SLOW\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "    public.f(integer) · adds: {} fails — executes: ERROR 42P01: no table\n",
                mark(Mark::Fail)
            )),
            "{text}"
        );
        assert!(
            text.contains("  state: alerting — public.f(integer) takes 50.0 ms per call\n"),
            "{text}"
        );
        let text = created(&watch);
        assert!(text.contains("baseline (track_functions = all):\n  public.f(integer): 40 call(s), 0.012 ms per call\n"), "{text}");
    }
}
