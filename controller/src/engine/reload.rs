//! Reloading the controller's config without a restart: operators' roles,
//! the revocation list, the TLS files, the environments (gates, windows,
//! approvals, promotion, …) and deployment timeouts. Triggered by SIGHUP or
//! by a change of any of those files (checked every second). A revoked agent
//! that is connected is disconnected at once. Settings read once at start-up
//! keep their values, and the log and the audit entry name them
//! (`live_config::reloadable`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use super::Controller;
use crate::auth::{Policy, Revocations};
use crate::config::ControllerConfig;
use crate::store::AuditEntry;

const POLL: Duration = Duration::from_secs(1);

/// Runs until the process ends.
pub async fn watch(controller: Arc<Controller>) {
    let mut paths = watched_paths(&controller.config_path, &controller.config);
    let mut last = fingerprint(&paths);
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut ticker = tokio::time::interval(POLL);
    loop {
        let signalled = tokio::select! {
            _ = ticker.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&paths);
        if now == last && !signalled {
            continue;
        }
        last = now;
        if let Some(config) = reload(&controller).await {
            paths = watched_paths(&controller.config_path, &config);
            last = fingerprint(&paths);
        }
    }
}

fn watched_paths(config_path: &std::path::Path, config: &ControllerConfig) -> Vec<PathBuf> {
    let mut paths = vec![config_path.to_owned()];
    if let Some(tls) = &config.tls {
        paths.extend([tls.ca.clone(), tls.cert.clone(), tls.key.clone()]);
    }
    paths
}

fn fingerprint(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Applies the file's current content; keeps the old policy when it is
/// invalid — except its revocations, which apply whenever they can be read.
/// Returns the new config when it was applied.
async fn reload(controller: &Controller) -> Option<ControllerConfig> {
    let audit = |outcome: &str, details: String| AuditEntry {
        actor: "controller".into(),
        action: "config.reloaded".into(),
        outcome: outcome.into(),
        details,
        ..Default::default()
    };
    let config = match ControllerConfig::load(&controller.config_path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "config reload failed; keeping the previous settings");
            controller
                .audit(audit("failed", format!("{error:#}")))
                .await;
            apply_revocations_of_unloadable_config(controller).await;
            return None;
        }
    };
    if let (Some(state), Some(files)) = (&controller.tls, &config.tls) {
        match super::tls_state::server_config(files) {
            Ok(server) => state.replace(server),
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "TLS files not reloaded; keeping the previous ones");
                controller
                    .audit(audit("failed", format!("TLS: {error:#}")))
                    .await;
            }
        }
    }
    let policy = Policy::from_config(&config);
    controller.replace_policy(policy.clone());
    let (config, need_restart) = super::live_config::reloadable(&controller.config, config);
    controller.config.replace(config.clone());
    // Scheduled requests are evaluated again: a window may have moved.
    controller.schedule_changed.notify_one();
    let environments = config.environments.len();
    let mut details = format!(
        "{} operator(s), {} revocation(s), {environments} environment(s) applied",
        policy.operators.len(),
        policy.revoked.len()
    );
    if need_restart.is_empty() {
        tracing::info!(
            operators = policy.operators.len(),
            revoked = policy.revoked.len(),
            environments,
            "config reloaded"
        );
    } else {
        let names = need_restart.join(", ");
        tracing::warn!(
            operators = policy.operators.len(),
            revoked = policy.revoked.len(),
            environments,
            need_restart = %names,
            "config reloaded, but these changed settings apply only after a restart (the old values stay in force)"
        );
        details.push_str(&format!("; changed but need a restart: {names}"));
    }
    controller.audit(audit("ok", details)).await;
    report_malformed_revocations(controller, &policy.revoked).await;
    disconnect_revoked_agents(controller, &policy).await;
    Some(config)
}

/// A config that does not load as a whole may still say whom to revoke: its
/// well-formed `[security] revoked` entries are added to the revocations in
/// force (never removing one), so a typo elsewhere cannot delay them.
async fn apply_revocations_of_unloadable_config(controller: &Controller) {
    let Ok(text) = std::fs::read_to_string(&controller.config_path) else {
        return;
    };
    let Ok(value) = text.parse::<toml::Table>() else {
        return;
    };
    let Some(entries) = value
        .get("security")
        .and_then(|s| s.get("revoked"))
        .and_then(|r| r.as_array())
    else {
        return;
    };
    let entries: Vec<String> = entries
        .iter()
        .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
        .collect();
    let found = Revocations::parse(&entries);
    let malformed = found.malformed.clone();
    let mut policy = (*controller.policy()).clone();
    let before = policy.revoked.len();
    policy.revoked.extend(found);
    policy.revoked.malformed = malformed;
    if policy.revoked.len() > before {
        tracing::warn!(
            added = policy.revoked.len() - before,
            "the config did not load, but its new revocations apply now"
        );
        controller.replace_policy(policy.clone());
    }
    report_malformed_revocations(controller, &policy.revoked).await;
    disconnect_revoked_agents(controller, &policy).await;
}

/// Reports every `[security] revoked` entry that could not be read, loudly:
/// whatever it was meant to revoke is not revoked until it is fixed.
pub async fn report_malformed_revocations(controller: &Controller, revocations: &Revocations) {
    if revocations.malformed.is_empty() {
        return;
    }
    let entries = format!("{:?}", revocations.malformed);
    tracing::error!(
        entries = %entries,
        applied = revocations.len(),
        "MALFORMED REVOCATION in [security] revoked: these entries revoke nothing until fixed \
         (spiffe://… or serial:<hex>, serial:01:AB:…); every other entry applies"
    );
    controller
        .audit(AuditEntry {
            actor: "controller".into(),
            action: "config.revocation_malformed".into(),
            outcome: "failed".into(),
            details: format!(
                "{} malformed entr(ies) revoke nothing: {entries}; {} well-formed revocation(s) apply",
                revocations.malformed.len(),
                revocations.len()
            ),
            ..Default::default()
        })
        .await;
}

async fn disconnect_revoked_agents(controller: &Controller, policy: &Policy) {
    for agent in controller.registry.all() {
        let Some(certificate) = &agent.certificate else {
            continue;
        };
        if policy.is_revoked(&certificate.id, &certificate.serial) {
            let reason = format!(
                "the certificate of agent {}/{} (serial {}) was revoked",
                agent.zone, agent.name, certificate.serial
            );
            tracing::warn!(agent = %agent.name, zone = %agent.zone, "disconnecting a revoked agent");
            agent.disconnect(super::error::EngineError::Forbidden(reason.clone()));
            controller.registry.unregister(agent.session);
            controller
                .audit(AuditEntry {
                    actor: format!("agent {}/{}", agent.zone, agent.name),
                    action: "agent.revoked".into(),
                    outcome: "disconnected".into(),
                    environment: None,
                    details: reason,
                    ..Default::default()
                })
                .await;
        }
    }
}
