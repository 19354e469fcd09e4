//! The `monitoring` gate (SEED.md "Monitoring configured"): every procedure
//! of the plan has a live post-deploy watch in the environment — the watch
//! is created first, so its baseline is the version before the deploy — and
//! none of those watches is blind.

use std::collections::BTreeSet;

use pgrollout_shared::job::unix_ms;
use pgrollout_shared::watch::WatchedName;

use super::{GateInput, GateResult};
use crate::config::GateName;
use crate::engine::watch::assess::BLIND;
use crate::store::{Store, StoreError};

pub async fn gate(store: &Store, input: &GateInput<'_>) -> Result<GateResult, StoreError> {
    let gate = GateName::Monitoring;
    let names: BTreeSet<WatchedName> = input
        .routines
        .iter()
        .map(|r| WatchedName {
            schema: r.schema.clone(),
            name: r.name.clone(),
        })
        .collect();
    let live = store
        .live_watches(Some(input.environment), unix_ms(input.now))
        .await?;
    let mut missing = Vec::new();
    let mut blind = Vec::new();
    let mut watched = Vec::new();
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
            Some(watch) => watched.push(format!("{name} by watch {}", watch.id)),
        }
    }
    if missing.is_empty() && blind.is_empty() {
        return Ok(GateResult::passed(
            gate,
            format!("watched: {}", watched.join(", ")),
        ));
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
