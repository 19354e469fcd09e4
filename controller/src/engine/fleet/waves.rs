//! Which targets a fleet environment has right now, and in which waves they
//! run. Pure: the agents' announcements come in, a plan of waves goes out.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::fleet::{split_target, FleetRollout};
use crate::config::Environment;

/// One target of a fleet, `zone/target`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub zone: String,
    pub target: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.zone, self.target)
    }
}

/// A target an agent announces: its zone (as the controller derived it), its
/// name and its labels.
pub struct Announced<'a> {
    pub zone: &'a str,
    pub target: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The environment's targets: every one it lists (announced or not — an
/// unannounced one fails at dispatch, visibly), and every announced one its
/// selector (`zones`, `labels`) matches; sorted, each once.
pub fn resolve(environment: &Environment, announced: &[Announced<'_>]) -> Vec<Member> {
    let mut members = BTreeSet::new();
    for spelled in &environment.targets {
        if let Some((zone, target)) = split_target(spelled) {
            members.insert(Member {
                zone: zone.to_owned(),
                target: target.to_owned(),
            });
        }
    }
    let selects = !environment.zones.is_empty() || !environment.labels.is_empty();
    if selects {
        for candidate in announced {
            let in_zone = environment.zones.is_empty()
                || environment.zones.iter().any(|z| z == candidate.zone);
            let labelled = environment
                .labels
                .iter()
                .all(|(key, value)| candidate.labels.get(key) == Some(value));
            if in_zone && labelled {
                members.insert(Member {
                    zone: candidate.zone.to_owned(),
                    target: candidate.target.to_owned(),
                });
            }
        }
    }
    members.into_iter().collect()
}

/// The wave of each member (same order as `members`): wave 0 is the canary
/// (a named target alone, or the first `canary_count`), then waves of at
/// most `max_concurrent` targets and `max_concurrent_per_zone` of one zone,
/// filled in order. Without a canary the first wave is 1.
pub fn plan(
    members: &[Member],
    rollout: &FleetRollout,
    default_max_concurrent: u32,
) -> Result<Vec<u32>, String> {
    let mut waves: Vec<Option<u32>> = vec![None; members.len()];
    if let Some(canary) = &rollout.canary {
        let position = members
            .iter()
            .position(|m| &m.to_string() == canary)
            .ok_or_else(|| {
                format!(
                    "the canary {canary} is not one of the environment's {} target(s) now: {}",
                    members.len(),
                    list(members)
                )
            })?;
        waves[position] = Some(0);
    } else if let Some(count) = rollout.canary_count {
        for wave in waves.iter_mut().take(count as usize) {
            *wave = Some(0);
        }
    }
    let max = rollout
        .max_concurrent
        .unwrap_or(default_max_concurrent)
        .max(1) as usize;
    let per_zone = rollout
        .max_concurrent_per_zone
        .map_or(usize::MAX, |n| n.max(1) as usize);
    let mut wave = 1;
    while waves.iter().any(Option::is_none) {
        let mut in_wave = 0;
        let mut by_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, member) in members.iter().enumerate() {
            if waves[index].is_some() || in_wave == max {
                continue;
            }
            let zone_count = by_zone.entry(member.zone.as_str()).or_default();
            if *zone_count == per_zone {
                continue;
            }
            *zone_count += 1;
            in_wave += 1;
            waves[index] = Some(wave);
        }
        wave += 1;
    }
    Ok(waves.into_iter().map(|w| w.unwrap_or_default()).collect())
}

/// `a/b, c/d` for messages, shortened past a dozen.
pub fn list(members: &[Member]) -> String {
    let mut shown: Vec<String> = members.iter().take(12).map(ToString::to_string).collect();
    if members.len() > 12 {
        shown.push(format!("… {} more", members.len() - 12));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(zone: &str, target: &str) -> Member {
        Member {
            zone: zone.into(),
            target: target.into(),
        }
    }

    fn environment(toml_text: &str) -> Environment {
        toml::from_str(toml_text).expect("environment")
    }

    #[test]
    fn the_selector_matches_zones_and_labels_and_lists_add_targets() {
        let prod = BTreeMap::from([("tier".to_owned(), "prod".to_owned())]);
        let test = BTreeMap::from([("tier".to_owned(), "test".to_owned())]);
        let announced = [
            Announced {
                zone: "prod-us",
                target: "db2",
                labels: &prod,
            },
            Announced {
                zone: "prod-eu",
                target: "db1",
                labels: &prod,
            },
            Announced {
                zone: "prod-eu",
                target: "scratch",
                labels: &test,
            },
            Announced {
                zone: "dev",
                target: "main",
                labels: &prod,
            },
        ];
        let env = environment(
            "zones = ['prod-eu', 'prod-us']\nlabels = { tier = 'prod' }\ntargets = ['prod-ap/db9']",
        );
        assert_eq!(
            resolve(&env, &announced),
            vec![
                member("prod-ap", "db9"),
                member("prod-eu", "db1"),
                member("prod-us", "db2")
            ]
        );
        // A list alone selects nothing else.
        let listed = environment("targets = ['prod-eu/db1']");
        assert_eq!(resolve(&listed, &announced), vec![member("prod-eu", "db1")]);
        // A one-target environment is not a fleet.
        assert!(!environment("zone = 'prod'").is_fleet());
    }

    #[test]
    fn a_canary_goes_first_then_waves_bounded_overall_and_per_zone() {
        let members = vec![
            member("eu", "a"),
            member("eu", "b"),
            member("eu", "c"),
            member("us", "d"),
            member("us", "e"),
        ];
        let rollout = FleetRollout {
            canary: Some("us/d".into()),
            max_concurrent: Some(3),
            max_concurrent_per_zone: Some(2),
            ..FleetRollout::default()
        };
        assert_eq!(plan(&members, &rollout, 1), Ok(vec![1, 1, 2, 0, 1]));
        // The default is the [deployment] max_concurrent: one at a time.
        assert_eq!(
            plan(&members, &FleetRollout::default(), 1),
            Ok(vec![1, 2, 3, 4, 5])
        );
        let counted = FleetRollout {
            canary_count: Some(2),
            max_concurrent: Some(50),
            ..FleetRollout::default()
        };
        assert_eq!(plan(&members, &counted, 1), Ok(vec![0, 0, 1, 1, 1]));
        let missing = FleetRollout {
            canary: Some("ap/z".into()),
            ..FleetRollout::default()
        };
        assert!(plan(&members, &missing, 1)
            .expect_err("refused")
            .contains("the canary ap/z is not one of the environment's 5 target(s)"));
    }
}
