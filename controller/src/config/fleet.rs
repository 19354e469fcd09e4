//! Issue 24: an environment that is a fleet of targets. The single
//! `zone` + `target` of an environment stays as it was; an environment with
//! `targets`, `zones` or `labels` is a fleet, resolved against the targets
//! agents announce when its rollout starts (so a target added to an agent
//! joins with no controller change), and rolled out in waves.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// What selects an environment's targets, and how its rollout proceeds.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FleetRollout {
    /// A named target (`zone/target`) that runs alone, first.
    pub canary: Option<String>,
    /// Or: the first N targets (in `zone/target` order) run first, together.
    pub canary_count: Option<u32>,
    /// Targets deploying at once, overall; default the `[deployment]`
    /// table's `max_concurrent` (itself 1).
    pub max_concurrent: Option<u32>,
    /// Targets deploying at once within one zone; unbounded when unset.
    pub max_concurrent_per_zone: Option<u32>,
    /// A pause after each successful wave before the next starts.
    #[serde(default, with = "humantime_serde")]
    pub soak: Option<Duration>,
}

/// One target as `zone/target`, the spelling of `targets` and `canary`.
pub fn split_target(spelled: &str) -> Option<(&str, &str)> {
    let (zone, target) = spelled.split_once('/')?;
    (!zone.is_empty() && !target.is_empty() && !target.contains('/')).then_some((zone, target))
}

/// The selector's checks, for the config's own validation.
pub fn validate(
    targets: &[String],
    labels: &BTreeMap<String, String>,
    rollout: Option<&FleetRollout>,
) -> Result<(), String> {
    for target in targets {
        if split_target(target).is_none() {
            return Err(format!(
                "targets: {target:?} is not `zone/target` (e.g. \"prod-eu/db1\")"
            ));
        }
    }
    if labels.keys().any(String::is_empty) {
        return Err("labels: a label name is empty".into());
    }
    if let Some(rollout) = rollout {
        if let Some(canary) = &rollout.canary {
            if split_target(canary).is_none() {
                return Err(format!("rollout.canary: {canary:?} is not `zone/target`"));
            }
            if rollout.canary_count.is_some() {
                return Err("rollout: set either canary or canary_count, not both".into());
            }
        }
        for (field, value) in [
            ("max_concurrent", rollout.max_concurrent),
            ("max_concurrent_per_zone", rollout.max_concurrent_per_zone),
            ("canary_count", rollout.canary_count),
        ] {
            if value == Some(0) {
                return Err(format!("rollout.{field}: must be at least 1"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_spelled_zone_slash_target() {
        assert_eq!(split_target("prod-eu/db1"), Some(("prod-eu", "db1")));
        assert_eq!(split_target("db1"), None);
        assert_eq!(split_target("a/b/c"), None);
        assert!(validate(&["prod-eu".into()], &BTreeMap::new(), None)
            .expect_err("refused")
            .contains("zone/target"));
        let both = FleetRollout {
            canary: Some("a/b".into()),
            canary_count: Some(1),
            ..FleetRollout::default()
        };
        assert!(validate(&[], &BTreeMap::new(), Some(&both)).is_err());
        let zero = FleetRollout {
            max_concurrent: Some(0),
            ..FleetRollout::default()
        };
        assert!(validate(&[], &BTreeMap::new(), Some(&zero))
            .expect_err("refused")
            .contains("max_concurrent"));
    }
}
