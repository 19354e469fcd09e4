//! The controller's config as it is in force now: replaced whole by a reload
//! (`reload.rs`), read everywhere as `controller.config.<setting>`.
//!
//! Every reader gets a plain `&ControllerConfig` without holding a lock, as
//! before reloads applied anything: each generation is leaked, so a reference
//! taken before a reload stays valid (it simply shows the older settings).
//! A config is a few kilobytes and a new generation exists only when an
//! operator changed the file, so what is kept is bounded by those edits.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::config::ControllerConfig;

pub struct LiveConfig {
    current: RwLock<&'static ControllerConfig>,
    generation: AtomicU64,
}

impl LiveConfig {
    pub fn new(config: ControllerConfig) -> Self {
        LiveConfig {
            current: RwLock::new(Box::leak(Box::new(config))),
            generation: AtomicU64::new(0),
        }
    }

    /// The settings in force now.
    pub fn get(&self) -> &'static ControllerConfig {
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `config` in force for every read from now on.
    pub fn replace(&self, config: ControllerConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Box::leak(Box::new(config));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts replacements: the scheduler evaluates every scheduled request
    /// again when it changed (a window may have moved).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl Deref for LiveConfig {
    type Target = ControllerConfig;

    fn deref(&self) -> &ControllerConfig {
        self.get()
    }
}

/// What a reload puts in force: `new`, except the settings that are read
/// once at start-up (listeners, store, audit key, message size, the
/// notifier's channels, metrics, the ticket lookup, telemetry), which keep
/// their values in force. Returns the config to apply and the settings that
/// changed in the file but need a restart, by their TOML names.
pub fn reloadable(
    old: &ControllerConfig,
    mut new: ControllerConfig,
) -> (ControllerConfig, Vec<String>) {
    let mut restart = Vec::new();
    // Compared by their debug form: these types have no equality of their
    // own, and nothing here is printed.
    fn keep<T: Clone + std::fmt::Debug>(
        name: &str,
        old: &T,
        new: &mut T,
        restart: &mut Vec<String>,
    ) {
        if format!("{old:?}") != format!("{new:?}") {
            restart.push(name.to_owned());
            *new = old.clone();
        }
    }
    keep("listen", &old.listen, &mut new.listen, &mut restart);
    keep("store", &old.store, &mut new.store, &mut restart);
    keep("audit", &old.audit, &mut new.audit, &mut restart);
    keep("limits", &old.limits, &mut new.limits, &mut restart);
    keep(
        "notifications",
        &old.notifications,
        &mut new.notifications,
        &mut restart,
    );
    keep("metrics", &old.metrics, &mut new.metrics, &mut restart);
    keep(
        "change_control",
        &old.change_control,
        &mut new.change_control,
        &mut restart,
    );
    keep(
        "telemetry",
        &old.telemetry,
        &mut new.telemetry,
        &mut restart,
    );
    for (name, environment) in &mut new.environments {
        let before = old
            .environments
            .get(name)
            .and_then(|e| e.notification_channel.clone());
        if environment.notification_channel != before {
            restart.push(format!("environments.{name}.notification_channel"));
            environment.notification_channel = before;
        }
    }
    (new, restart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> ControllerConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/examples/controller.toml");
        ControllerConfig::load(&path).expect("example config is valid")
    }

    #[test]
    fn environment_settings_apply_and_start_up_settings_wait_for_a_restart() {
        let old = example();
        let mut new = old.clone();
        let prod = new.environments.get_mut("prod").expect("prod");
        prod.maintenance_window = Some("05:00-06:00 UTC".into());
        prod.approvals = 3;
        prod.notification_channel = Some("#elsewhere".into());
        new.limits.max_message_bytes = 1 << 20;
        new.listen.operators = "127.0.0.1:9".parse().expect("address");
        let (applied, restart) = reloadable(&old, new);
        assert_eq!(
            restart,
            ["listen", "limits", "environments.prod.notification_channel"]
        );
        let prod = &applied.environments["prod"];
        assert_eq!(prod.maintenance_window.as_deref(), Some("05:00-06:00 UTC"));
        assert_eq!(prod.approvals, 3);
        assert_eq!(prod.notification_channel.as_deref(), Some("#prod-deploys"));
        assert_eq!(
            applied.limits.max_message_bytes,
            old.limits.max_message_bytes
        );
        assert_eq!(applied.listen.operators, old.listen.operators);
    }

    #[test]
    fn every_read_sees_the_newest_generation() {
        let live = LiveConfig::new(example());
        let before: &ControllerConfig = &live;
        let mut changed = example();
        changed.environments.remove("dev");
        live.replace(changed);
        assert_eq!(live.generation(), 1);
        assert!(!live.environments.contains_key("dev"));
        assert!(
            before.environments.contains_key("dev"),
            "an older reference stays valid"
        );
    }
}
