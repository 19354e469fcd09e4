//! The `monitoring` gate (SEED.md "Monitoring configured"): every procedure
//! of the plan has a live post-deploy watch in the environment — the watch
//! is created first, so its baseline is the version before the deploy — and
//! none of those watches is blind. A watch that has no baseline for a
//! routine of the plan (no calls counted before the deploy, or the routine
//! is new) and no `--max-time` bound cannot tell that routine got slower:
//! the gate says so, and refuses when `monitoring_without_baseline =
//! "refuse"` (issue 23).

use std::collections::BTreeSet;

use pgrollout_shared::job::unix_ms;
use pgrollout_shared::watch::WatchedName;

use super::{GateInput, GateResult};
use crate::config::{GateName, NoBaseline};
use crate::engine::watch::assess::BLIND;
use crate::store::{Store, StoreError};

pub async fn gate(
    store: &Store,
    without_baseline: NoBaseline,
    input: &GateInput<'_>,
) -> Result<GateResult, StoreError> {
    let gate = GateName::Monitoring;
    // A routine the plan retires will not be there to watch.
    let names: BTreeSet<WatchedName> = input
        .routines
        .iter()
        .filter(|r| r.retire.is_none())
        .map(|r| WatchedName {
            schema: r.identity.schema.clone(),
            name: r.identity.name.clone(),
        })
        .collect();
    let live = store
        .live_watches(Some(input.environment), unix_ms(input.now))
        .await?;
    let mut missing = Vec::new();
    let mut blind = Vec::new();
    let mut watched = Vec::new();
    let mut unseen = Vec::new();
    for name in &names {
        let covering = live.iter().find(|w| {
            w.spec
                .names
                .iter()
                .any(|n| n.schema == name.schema && n.name == name.name)
        });
        match covering {
            None => missing.push(name),
            Some(watch) if watch.state == BLIND => blind.push(format!(
                "watch {} of {name} is blind: {}",
                watch.id, watch.reason
            )),
            Some(watch) => {
                watched.push(format!("{name} by watch {}", watch.id));
                if watch.max_time_us == 0 {
                    let routines = input.routines.iter().filter(|r| {
                        r.identity.schema == name.schema && r.identity.name == name.name
                    });
                    for routine in routines {
                        let identity = routine.identity.to_string();
                        let counted = watch
                            .baseline
                            .functions
                            .iter()
                            .any(|f| f.identity == identity && f.has_stats && f.calls > 0);
                        if !counted {
                            unseen.push(format!("{identity} (watch {})", watch.id));
                        }
                    }
                }
            }
        }
    }
    let unseen_sentence = (!unseen.is_empty()).then(|| {
        format!(
            "no baseline for {}: no calls were counted before the deploy, so the watch can see failing calls \
             but not slow ones; cancel it and create it again with --max-time <bound per call> (e.g. \
             `pgrollout alert create <procedure> {} --max-time 50ms`)",
            unseen.join(", "),
            input.environment
        )
    });
    if missing.is_empty() && blind.is_empty() {
        return Ok(match (unseen_sentence, without_baseline) {
            (None, _) => GateResult::passed(gate, format!("watched: {}", watched.join(", "))),
            (Some(sentence), NoBaseline::Pass) => GateResult::passed(
                gate,
                format!("watched: {}; but {sentence}", watched.join(", ")),
            ),
            (Some(sentence), NoBaseline::Refuse) => GateResult::failed(
                gate,
                format!("{sentence} (monitoring_without_baseline = \"refuse\")"),
            ),
        });
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        let listed: Vec<String> = missing.iter().map(ToString::to_string).collect();
        let commands: Vec<String> = missing
            .iter()
            .map(|n| {
                format!(
                    "`pgrollout alert create {} {}`",
                    command_name(n),
                    input.environment
                )
            })
            .collect();
        problems.push(format!(
            "no live post-deploy watch for {} in {}; create it before the deploy, so its baseline is the version \
             running now: {}",
            listed.join(", "),
            input.environment,
            commands.join(", then ")
        ));
    }
    if !blind.is_empty() {
        problems.push(format!(
            "{}; fix that, or cancel the watch and create it again",
            blind.join("; ")
        ));
    }
    problems.extend(unseen_sentence);
    Ok(GateResult::failed(gate, problems.join("; ")))
}

/// How an operator names the routine: bare in `public`, qualified elsewhere.
fn command_name(name: &WatchedName) -> String {
    if name.schema == "public" {
        name.name.clone()
    } else {
        name.to_string()
    }
}
