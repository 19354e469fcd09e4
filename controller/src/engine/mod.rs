//! The rollout engine: which agents are connected (registry), where each
//! job's updates go (router), how one rollout runs (rollout), and the
//! reloadable security policy (reload).

pub mod adopt;
pub mod after_deploy;
pub mod approved_sql;
pub mod audit_anchors;
pub mod clock;
pub mod delivery;
pub mod drain;
pub mod drift;
pub mod drift_schedule;
pub mod dry_run;
pub mod error;
pub mod fleet;
pub mod followers;
pub mod gates;
pub mod identity;
pub mod launch;
pub mod leader;
pub mod leadership;
pub mod live_config;
pub mod liveness;
pub mod malformed_report;
pub mod operations;
pub mod perf_baseline;
pub mod recovery;
pub mod registry;
pub mod reload;
pub mod requests;
pub mod retention;
pub mod retry;
pub mod rollback_sources;
pub mod rollout;
pub mod router;
pub mod tls_state;
pub mod updates;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::auth::Policy;
use crate::config::ControllerConfig;
use crate::store::{AuditEntry, Store};
use tls_state::TlsState;

/// Everything the gRPC services share.
pub struct Controller {
    /// The settings in force; a reload replaces what applies without a restart.
    pub config: live_config::LiveConfig,
    pub config_path: PathBuf,
    pub store: Store,
    pub registry: registry::Registry,
    pub router: router::JobRouter,
    /// `None` in `--dev-plaintext` mode.
    pub tls: Option<Arc<TlsState>>,
    /// Tells the configured channels how rollouts end (never blocks).
    pub notifier: crate::notify::Notifier,
    /// The time gates and the scheduler go by (injected in tests).
    pub clock: Arc<dyn clock::Clock>,
    /// Operators following parked requests until they run.
    pub followers: followers::Followers,
    /// Wakes the scheduler when a request is scheduled or rescheduled.
    pub schedule_changed: tokio::sync::Notify,
    /// The change-control lookup of the change_ticket gate, if configured.
    pub ticket_check: Option<gates::ticket::TicketCheck>,
    /// Post-deploy watches' sample offers in flight and their tasks.
    pub watches: watch::Watches,
    /// Forwards agents' relayed spans to the collector (never blocks).
    pub span_relay: crate::telemetry::relay::SpanRelay,
    /// Jobs out with agents, and whether new ones are still offered (SIGTERM).
    pub drain: drain::Drain,
    /// The gRPC listeners serve (`/readyz`).
    pub serving: std::sync::atomic::AtomicBool,
    /// This process's row among the controllers on the store (issue 18);
    /// set by `serve` before any job is offered, unset in unit tests.
    pub identity: std::sync::OnceLock<identity::Identity>,
    /// This controller's leadership of the singletons (issue 18), set by
    /// `Leader::start`; unset in unit tests that start no lease task.
    pub leader: std::sync::OnceLock<leadership::Leader>,
    policy: RwLock<Arc<Policy>>,
}

impl Controller {
    pub fn new(
        config: ControllerConfig,
        config_path: PathBuf,
        store: Store,
        tls: Option<Arc<TlsState>>,
    ) -> Arc<Self> {
        Controller::with_clock(
            config,
            config_path,
            store,
            tls,
            Arc::new(clock::SystemClock),
        )
    }

    pub fn with_clock(
        config: ControllerConfig,
        config_path: PathBuf,
        store: Store,
        tls: Option<Arc<TlsState>>,
        clock: Arc<dyn clock::Clock>,
    ) -> Arc<Self> {
        let policy = Policy::from_config(&config);
        let notifier = crate::notify::Notifier::start(&config, store.clone());
        let ticket_check = config
            .change_control
            .clone()
            .map(gates::ticket::TicketCheck::new);
        let relayed_by = config.telemetry.service_name.as_deref();
        let span_relay = crate::telemetry::relay::SpanRelay::start(
            &config.telemetry,
            relayed_by.unwrap_or(crate::telemetry::CONTROLLER_SERVICE),
        );
        Arc::new(Controller {
            config: live_config::LiveConfig::new(config),
            config_path,
            store,
            registry: registry::Registry::default(),
            router: router::JobRouter::default(),
            tls,
            notifier,
            clock,
            followers: followers::Followers::default(),
            schedule_changed: tokio::sync::Notify::new(),
            ticket_check,
            watches: watch::Watches::default(),
            span_relay,
            drain: drain::Drain::default(),
            serving: std::sync::atomic::AtomicBool::new(false),
            identity: std::sync::OnceLock::new(),
            leader: std::sync::OnceLock::new(),
            policy: RwLock::new(Arc::new(policy)),
        })
    }

    /// The security policy in force right now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Appends to the audit log; a failure is logged, never fatal to the
    /// action being audited.
    pub async fn audit(&self, entry: AuditEntry) {
        let action = entry.action.clone();
        if let Err(error) = self.store.audit(entry).await {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), %action, "audit append failed");
        }
    }
}

/// A new sortable, unique id such as `r-18c3f2a9b10-7f3a`.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:x}-{:04x}",
        pgrollout_shared::job::now_unix_ms(),
        fastrand::u16(..)
    )
}
