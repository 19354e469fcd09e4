//! The `performance` gate (SEED.md: "Performance test passed (≤120%
//! baseline)"): every routine of the plan that declares a `[perf]` probe
//! needs a probe of this very plan recorded in the environment it is
//! promoted from, with the new median at most the threshold (120 % unless
//! configured) of the old one. The reason shows both medians.

use pgrollout_shared::proto::Routine;

use super::{GateInput, GateResult};
use crate::config::{Environment, GateName};
use crate::store::{RecordedProbe, Store, StoreError};

pub async fn evaluate(
    store: &Store,
    environment: &Environment,
    input: &GateInput<'_>,
) -> Result<GateResult, StoreError> {
    let gate = GateName::Performance;
    let from = environment.promote_from.as_deref().unwrap_or_default();
    let threshold = environment.performance_threshold_percent;
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
    let short = &input.plan_id[..input.plan_id.len().min(12)];
    let mut within = Vec::new();
    let mut over = Vec::new();
    for routine in probed {
        let identity = identity_of(routine);
        match store
            .latest_perf_probe(input.plan_id, from, &identity)
            .await?
        {
            None => over.push(format!(
                "{identity}: no performance probe of plan {short} in {from}; deploy the plan there with \
                 run_perf_probe = true, or run `pgrollout perf {from} {}`",
                routine.name
            )),
            Some(probe) => match verdict(&probe, threshold) {
                Ok(text) => within.push(format!("{identity}: {text}")),
                Err(text) => over.push(format!("{identity}: {text} (probe in {from}, rollout {})", probe.rollout_id)),
            },
        }
    }
    Ok(if over.is_empty() {
        GateResult::passed(gate, format!("{} (probed in {from})", within.join("; ")))
    } else {
        GateResult::failed(gate, over.join("; "))
    })
}

/// `Ok` with both medians when the new one is within `threshold` percent of
/// the old one (or there is no old one), `Err` with both otherwise.
fn verdict(probe: &RecordedProbe, threshold: u32) -> Result<String, String> {
    let new = probe.new_median_us;
    let Some(old) = probe.old_median_us else {
        return Ok(format!(
            "new routine, no baseline to compare with (new median {}, {} runs)",
            ms(new),
            probe.runs
        ));
    };
    // Integer arithmetic: new/old <= threshold/100, without rounding.
    let percent = (new * 100).checked_div(old.max(1)).unwrap_or(u64::MAX);
    if u128::from(new) * 100 <= u128::from(old) * u128::from(threshold) {
        Ok(format!(
            "new median {} vs old median {} ({percent}% ≤ {threshold}%, {} runs each)",
            ms(new),
            ms(old),
            probe.runs
        ))
    } else {
        Err(format!(
            "new median {} is {percent}% of the old median {}, over the {threshold}% limit",
            ms(new),
            ms(old)
        ))
    }
}

/// `schema.name(argument types)`, as the agent reports the routine.
pub fn identity_of(routine: &Routine) -> String {
    format!(
        "{}.{}({})",
        routine.schema,
        routine.name,
        routine.arg_types.join(", ")
    )
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
            baseline: "live definition".into(),
        }
    }

    #[test]
    fn the_limit_is_inclusive_and_both_medians_are_shown() {
        assert_eq!(
            verdict(&probe(Some(10_000), 12_000), 120),
            Ok("new median 12.000 ms vs old median 10.000 ms (120% ≤ 120%, 7 runs each)".into())
        );
        assert_eq!(
            verdict(&probe(Some(10_000), 12_001), 120),
            Err(
                "new median 12.001 ms is 120% of the old median 10.000 ms, over the 120% limit"
                    .into()
            )
        );
        assert_eq!(
            verdict(&probe(Some(20_000), 41_000), 120),
            Err(
                "new median 41.000 ms is 205% of the old median 20.000 ms, over the 120% limit"
                    .into()
            )
        );
        assert!(verdict(&probe(None, 5_000), 120)
            .expect("no baseline passes")
            .starts_with("new routine, no baseline"));
        assert!(verdict(&probe(Some(0), 0), 120).is_ok());
    }
}
