//! The `performance` gate (SEED.md: "Performance test passed (≤120%
//! baseline)"): every routine of the plan that declares a `[perf]` probe
//! needs a probe of this very plan recorded in the environment it is
//! promoted from, and the baseline is what THIS environment runs now
//! (issue 23): the probe must have timed, as its old definition, the version
//! the controller last saw succeed here — in the same run as the new one.
//! The new median may be at most the threshold (120 % unless configured) of
//! that old one. A probe that failed refuses, with its error; a routine with
//! no comparable baseline (new here, or a version whose statement the
//! controller does not hold) passes or refuses as `performance_new_routine`
//! says, and the reason says which.

use pgrollout_shared::routine::Routine;
use pgrollout_shared::test_reports::runs;

use super::{GateInput, GateResult};
use crate::config::{Environment, GateName, NoBaseline};
use crate::engine::perf_baseline::{self, Running};
use crate::store::{RecordedProbe, Store, StoreError};

pub async fn evaluate(
    store: &Store,
    environment: &Environment,
    input: &GateInput<'_>,
) -> Result<GateResult, StoreError> {
    let gate = GateName::Performance;
    let from = environment.promote_from.as_deref().unwrap_or_default();
    let here = input.environment;
    let probed: Vec<&Routine> = input
        .routines
        .iter()
        .filter(|r| r.perf_probe.is_some())
        .collect();
    if probed.is_empty() {
        return Ok(GateResult::passed(
            gate,
            "no routine of this plan declares a [perf] probe, so there is nothing to compare",
        ));
    }
    let identities: Vec<String> = probed.iter().map(|r| r.identity.to_string()).collect();
    let running = perf_baseline::running_versions(store, here, &identities).await?;
    let short = &input.plan_id[..input.plan_id.len().min(12)];
    let mut within = Vec::new();
    let mut over = Vec::new();
    for (routine, identity) in probed.into_iter().zip(identities) {
        let probe = store
            .latest_perf_probe(input.plan_id, from, &identity, here)
            .await?;
        let measure_again = format!("run `pgrollout perf {} {from}`", routine.identity.name);
        let Some(probe) = probe else {
            over.push(format!(
                "{identity}: no performance probe of plan {short} in {from} timed against the version {here} runs; \
                 deploy the plan there with run_perf_probe = true, or {measure_again}"
            ));
            continue;
        };
        let running = running.get(&identity);
        match judge(&probe, running, here, environment) {
            Ok(text) => within.push(format!("{identity}: {text}")),
            Err(text) => {
                let stale =
                    probe.baseline_sha256 != running.map(|r| r.sha256.as_str()).unwrap_or_default();
                let again = if !probe.error.is_empty() {
                    format!("; fix it and {measure_again}")
                } else if stale {
                    format!("; {measure_again}")
                } else {
                    String::new()
                };
                over.push(format!(
                    "{identity}: {text} (probe in {from}, rollout {}){again}",
                    probe.rollout_id
                ));
            }
        }
    }
    Ok(if over.is_empty() {
        GateResult::passed(gate, format!("{} (probed in {from})", within.join("; ")))
    } else {
        GateResult::failed(gate, over.join("; "))
    })
}

/// One routine's probe against what `here` runs now.
fn judge(
    probe: &RecordedProbe,
    running: Option<&Running>,
    here: &str,
    environment: &Environment,
) -> Result<String, String> {
    if !probe.error.is_empty() {
        return Err(format!("the performance probe failed: {}", probe.error));
    }
    let runs_now = running.map(|r| r.sha256.as_str()).unwrap_or_default();
    if probe.baseline_sha256 != runs_now {
        return Err(format!(
            "{here} now runs {}, but the probe timed {} as the old definition",
            version(runs_now),
            version(&probe.baseline_sha256)
        ));
    }
    if probe.old_median_us.is_none() {
        let why = match running {
            None => format!("new in {here}: no baseline to compare with"),
            Some(_) => format!(
                "no comparable baseline: the controller holds no statement of the version {here} runs ({})",
                version(runs_now)
            ),
        };
        let text = format!(
            "{why} (new median {}, {})",
            ms(probe.new_median_us),
            runs(probe.runs)
        );
        return match environment.performance_new_routine {
            NoBaseline::Pass => Ok(text),
            NoBaseline::Refuse => Err(format!("{text}; performance_new_routine = \"refuse\"")),
        };
    }
    verdict(probe, environment.performance_threshold_percent)
}

/// `version 3f2a1b0c9d8e` or `no version`.
fn version(sha256: &str) -> String {
    if sha256.is_empty() {
        "no version".to_owned()
    } else {
        format!("version {}", &sha256[..sha256.len().min(12)])
    }
}

/// `Ok` with both medians when the new one is within `threshold` percent of
/// the old one, `Err` with both otherwise.
fn verdict(probe: &RecordedProbe, threshold: u32) -> Result<String, String> {
    let new = probe.new_median_us;
    let old = probe.old_median_us.unwrap_or(0);
    // Integer arithmetic: new/old <= threshold/100, without rounding.
    let percent = (new * 100).checked_div(old.max(1)).unwrap_or(u64::MAX);
    if u128::from(new) * 100 <= u128::from(old) * u128::from(threshold) {
        Ok(format!(
            "new median {} vs old median {} of {} ({percent}% ≤ {threshold}%, {} each)",
            ms(new),
            ms(old),
            probe.baseline,
            runs(probe.runs)
        ))
    } else {
        Err(format!(
            "new median {} is {percent}% of the old median {} of {}, over the {threshold}% limit",
            ms(new),
            ms(old),
            probe.baseline
        ))
    }
}

fn ms(microseconds: u64) -> String {
    format!("{:.3} ms", microseconds as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(old: Option<u64>, new: u64) -> RecordedProbe {
        RecordedProbe {
            rollout_id: "r-1".into(),
            runs: 7,
            old_median_us: old,
            new_median_us: new,
            baseline: "prod's version (plan abc, rollout r-0)".into(),
            baseline_sha256: "ab".repeat(32),
            error: String::new(),
        }
    }

    #[test]
    fn the_limit_is_inclusive_and_both_medians_are_shown() {
        assert_eq!(
            verdict(&probe(Some(10_000), 12_000), 120),
            Ok("new median 12.000 ms vs old median 10.000 ms of prod's version (plan abc, rollout r-0) (120% ≤ 120%, 7 runs each)".into())
        );
        assert_eq!(
            verdict(&probe(Some(10_000), 12_001), 120),
            Err(
                "new median 12.001 ms is 120% of the old median 10.000 ms of prod's version (plan abc, rollout r-0), over the 120% limit"
                    .into()
            )
        );
        assert!(verdict(&probe(Some(0), 0), 120).is_ok());
    }

    fn prod(policy: NoBaseline) -> Environment {
        let mut environment: Environment =
            toml::from_str("promote_from = 'qa'").expect("environment");
        environment.performance_new_routine = policy;
        environment
    }

    #[test]
    fn the_baseline_is_what_the_target_runs_now() {
        let running = Running {
            sha256: "ab".repeat(32),
            create_sql: Some("CREATE FUNCTION …".into()),
            source: "prod's version".into(),
        };
        let env = prod(NoBaseline::Pass);
        assert!(judge(&probe(Some(10_000), 11_000), Some(&running), "prod", &env).is_ok());
        // PROD moved on since the probe: measure again.
        let moved = Running {
            sha256: "cd".repeat(32),
            ..running.clone()
        };
        let refused =
            judge(&probe(Some(10_000), 11_000), Some(&moved), "prod", &env).expect_err("stale");
        assert!(
            refused.contains(
                "prod now runs version cdcdcdcdcdcd, but the probe timed version abababababab"
            ),
            "{refused}"
        );
        // A failed probe refuses with its error.
        let failed = RecordedProbe {
            error: "ERROR 22012: division by zero".into(),
            ..probe(None, 0)
        };
        let refused = judge(&failed, Some(&running), "prod", &env).expect_err("failed");
        assert_eq!(
            refused,
            "the performance probe failed: ERROR 22012: division by zero"
        );
        // New in PROD: pass or refuse as configured, saying so either way.
        let new = RecordedProbe {
            baseline_sha256: String::new(),
            runs: 1,
            ..probe(None, 5_000)
        };
        assert_eq!(
            judge(&new, None, "prod", &env),
            Ok("new in prod: no baseline to compare with (new median 5.000 ms, 1 run)".into())
        );
        let refused = judge(&new, None, "prod", &prod(NoBaseline::Refuse)).expect_err("refuse");
        assert!(
            refused.ends_with("performance_new_routine = \"refuse\""),
            "{refused}"
        );
    }
}
