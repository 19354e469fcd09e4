//! The controller's configuration. Environments map to zones and targets;
//! database hosts and credentials are deliberately absent: they live in each
//! zone's agent config and never reach the controller.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod change_control;
pub mod fleet;
pub mod metrics;
pub mod notifications;
pub mod retention;
pub mod window;

/// Environment overrides: `PGROLLOUT_CONTROLLER__LISTEN__OPERATORS=...`.
pub const ENV_PREFIX: &str = "PGROLLOUT_CONTROLLER";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    pub listen: Listen,
    pub store: StoreConfig,
    #[serde(default)]
    pub deployment: Deployment,
    /// Environment name (dev, qa, prod, …) to its settings.
    pub environments: BTreeMap<String, Environment>,
    /// Mutual TLS for both listeners. Required unless the controller runs
    /// with `--dev-plaintext`.
    pub tls: Option<TlsFiles>,
    /// Operator name (from the certificate's SPIFFE id) to granted roles.
    /// Reloaded without restart.
    #[serde(default)]
    pub operators: BTreeMap<String, Vec<OperatorRole>>,
    #[serde(default)]
    pub security: Security,
    /// Where the audit log's key lives (`crate::store::audit_key`).
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub limits: Limits,
    /// Slack, webhook and email channels per environment (`crate::notify`).
    pub notifications: Option<notifications::NotificationsConfig>,
    /// The Prometheus endpoint; none without this table (`crate::metrics`).
    pub metrics: Option<metrics::MetricsConfig>,
    /// Where the change_ticket gate looks tickets up (optional).
    pub change_control: Option<change_control::ChangeControlConfig>,
    /// Span export (OTLP) and the relay of agents' spans (`crate::telemetry`).
    #[serde(default)]
    pub telemetry: pgrollout_shared::telemetry::TelemetryConfig,
    /// `[log] format = "text" | "json"`.
    #[serde(default)]
    pub log: pgrollout_shared::log_format::LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA that issues agent and operator certificates (`pgrollout ca init`).
    pub ca: PathBuf,
    /// The controller's own certificate and key (`pgrollout ca issue controller`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Peers must carry SPIFFE ids of this trust domain.
    pub trust_domain: String,
}

/// What an operator may do. `admin` implies every other role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    /// Read-only: agents, rollouts, status.
    Viewer,
    /// Start deploys and smoke tests.
    Deployer,
    /// Approve or reject rollouts.
    Approver,
    /// Sign off rollouts (SEED.md's stakeholder sign-off gate).
    Stakeholder,
    /// Everything.
    Admin,
}

impl OperatorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Deployer => "deployer",
            OperatorRole::Approver => "approver",
            OperatorRole::Stakeholder => "stakeholder",
            OperatorRole::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Revoked identities: SPIFFE ids (`spiffe://…`) or certificate serials
    /// (`serial:<hex>`, or openssl's `serial:01:AB:…`). Reloaded without
    /// restart; a connected agent that becomes revoked is disconnected at
    /// once. A malformed entry is reported (error log, audit) and the others
    /// still apply.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// The `[audit]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The HMAC key that authenticates every audit entry. Default: beside the
    /// store (`<store path>.audit-key`). Keep it where whoever can write the
    /// store cannot, and back it up: without it no entry verifies.
    pub key_file: Option<PathBuf>,
}

impl ControllerConfig {
    /// The audit key's file, configured or beside the store.
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit
            .key_file
            .clone()
            .unwrap_or_else(|| default_audit_key_path(&self.store.path))
    }
}

/// Where the audit key lives when `[audit] key_file` is not set: beside
/// the store. Here rather than in the store so the config stays a leaf; the
/// store uses it too.
pub fn default_audit_key_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".audit-key");
    PathBuf::from(name)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest gRPC message either listener accepts.
    pub max_message_bytes: usize,
    /// Most routines one plan may carry.
    pub max_routines_per_plan: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 * 1024 * 1024,
            max_routines_per_plan: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where operators' CLIs connect.
    pub operators: SocketAddr,
    /// Where agents dial in.
    pub agents: SocketAddr,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The embedded SQLite store, created on first start (the default).
    #[serde(default)]
    pub path: PathBuf,
    /// A PostgreSQL store instead (issue 18): `postgres://user:pw@host/db`
    /// (or libpq's key=value form). Keep the password out of the file with
    /// the environment override (`PGROLLOUT_CONTROLLER__STORE__URL`); it is never
    /// printed (see `redacted_url`).
    #[serde(default)]
    pub url: Option<String>,
    /// PEM roots that sign the PostgreSQL server's certificate: with it the
    /// store connects over TLS (unless sslmode=disable), verifying the server.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Pruning of old rollouts' events and results; none without the table.
    pub retention: Option<retention::RetentionConfig>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(redacted_url))
            .field("ca_file", &self.ca_file)
            .field("retention", &self.retention)
            .finish()
    }
}

impl StoreConfig {
    /// What to show of the store in logs: the file, or the URL without
    /// its password.
    pub fn describe(&self) -> String {
        match &self.url {
            Some(url) => redacted_url(url),
            None => self.path.display().to_string(),
        }
    }
}

/// A store URL with any password replaced by `***`: in the URL's userinfo
/// (`postgres://u:pw@h`) or as a `password=` option (query or key=value).
pub fn redacted_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (start, end) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                out.replace_range(start..end, "***");
            }
        }
    }
    let mut search = 0;
    while let Some(found) = out[search..].to_ascii_lowercase().find("password=") {
        let start = search + found + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
        search = start + 3;
    }
    out
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deployment {
    /// A job's deadline: past it the agent stops and rolls back.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// How long an offered job may wait for the agent's Accept.
    #[serde(with = "humantime_serde")]
    pub accept_timeout: Duration,
    /// Longest the controller waits for an agent of the zone to connect
    /// before refusing a rollout (the CLI may ask for less).
    #[serde(with = "humantime_serde")]
    pub max_agent_wait: Duration,
    /// Interval of the controller's heartbeats to agents.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A rollback's deadline (SEED.md `rollback_timeout_seconds`): past it
    /// the agent stops and says whether anything was committed.
    #[serde(with = "humantime_serde")]
    pub rollback_timeout: Duration,
    /// A job's lease (DESIGN §4.5): an agent that hears nothing from the
    /// controller for this long abandons the job's uncommitted work, so a
    /// job in doubt can be retried without two agents racing. Keep it well
    /// above a few heartbeat intervals.
    #[serde(with = "humantime_serde")]
    pub job_lease: Duration,
    /// On SIGTERM, how long the controller waits for jobs already offered to
    /// report (and relays their results) before it exits; no new job is
    /// offered meanwhile. Keep it below the service manager's stop timeout.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// SEED.md's `max_concurrent`: targets of a fleet environment deploying
    /// at once, unless its `[environments.X.rollout]` says otherwise.
    pub max_concurrent: u32,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            job_timeout: Duration::from_secs(600),
            accept_timeout: Duration::from_secs(10),
            max_agent_wait: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            rollback_timeout: Duration::from_secs(300),
            job_lease: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            max_concurrent: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The network zone whose agents serve this environment; defaults to the
    /// environment's own name.
    pub zone: Option<String>,
    /// The target name, within the zone's agents, that this environment
    /// deploys to.
    #[serde(default = "default_target")]
    pub target: String,
    /// The environment a plan must have succeeded in first (QA after DEV).
    pub promote_from: Option<String>,
    /// The gates every rollout here must pass, by name (see `GateName`).
    #[serde(default)]
    pub gates: Vec<GateName>,
    /// SEED.md's `require_approval`: adds the `approval` gate.
    #[serde(default)]
    pub require_approval: bool,
    /// How many distinct approvers the `approval` gate needs.
    #[serde(default = "one")]
    pub approvals: u32,
    /// SEED.md's `maintenance_window`, e.g. `02:00-04:00 UTC` or
    /// `Sat,Sun 01:00-05:00 Europe/Berlin` (`window::TimeWindow`).
    pub maintenance_window: Option<String>,
    /// Business hours for the `business_hours` gate, e.g.
    /// `Mon-Fri 08:00-18:00 Europe/Berlin` (any IANA zone, or UTC).
    pub business_hours: Option<String>,
    /// SEED.md's `backup_retention_days` (backups are kept by the agents).
    pub backup_retention_days: Option<u32>,
    /// SEED.md's `notification_channel`, e.g. `#prod-deploys`.
    pub notification_channel: Option<String>,
    /// Run the plan's pgTAP scripts after each successful deploy here; the
    /// next environment's `tests_passed` gate requires them to pass.
    #[serde(default)]
    pub run_pgtap: bool,
    /// Run the plan's `[perf]` probes after each successful deploy here
    /// (QA); the next environment's `performance` gate reads the medians.
    #[serde(default)]
    pub run_perf_probe: bool,
    /// The `performance` gate: the new median may be at most this percentage
    /// of the old one (SEED.md: 120).
    #[serde(default = "default_performance_threshold")]
    pub performance_threshold_percent: u32,
    /// The `syntax` gate refuses a `SECURITY DEFINER` routine without `SET
    /// search_path` (otherwise it only warns); e.g. for prod.
    #[serde(default)]
    pub require_search_path: bool,
    /// The `performance` gate, for a routine with no comparable baseline
    /// (new here, or a version whose definition the controller does not
    /// hold): `pass` says so and lets it through, `refuse` refuses it.
    #[serde(default)]
    pub performance_new_routine: NoBaseline,
    /// The `monitoring` gate, for a watch that has no baseline for a routine
    /// of the plan and no `--max-time` bound, so it cannot tell that the
    /// routine got slower: `pass` says so, `refuse` refuses.
    #[serde(default)]
    pub monitoring_without_baseline: NoBaseline,
    /// Scan the target for drift this often (issue 20): a new finding is
    /// audited and notified as `drift.detected`. Unset: only when asked.
    #[serde(default, with = "humantime_serde")]
    pub drift_scan_interval: Option<Duration>,
    /// Issue 24, a fleet: these targets (`zone/target`) …
    #[serde(default)]
    pub targets: Vec<String>,
    /// … and/or every target agents of these zones announce …
    #[serde(default)]
    pub zones: Vec<String>,
    /// … carrying all of these labels (with `zones`, or over every zone).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How a fleet's rollout proceeds: canary, waves, soak.
    pub rollout: Option<fleet::FleetRollout>,
}

/// What a gate does when there is nothing to compare with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoBaseline {
    /// Say so in the gate's reason, and pass.
    #[default]
    Pass,
    /// Say so, and refuse.
    Refuse,
}

fn default_performance_threshold() -> u32 {
    120
}

/// The gates of SEED.md's "Deployment Gates by Environment", configured per
/// environment as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateName {
    Syntax,
    TestsPassed,
    PromotedFrom,
    Approval,
    BackupCreated,
    BackupVerified,
    BusinessHours,
    MaintenanceWindow,
    Performance,
    ChangeTicket,
    StakeholderSignoff,
    Runbook,
    RollbackPlan,
    Monitoring,
    /// Issue 20: refuse to overwrite a routine changed by hand (judged by the agent).
    NoDrift,
}

impl GateName {
    pub fn as_str(self) -> &'static str {
        match self {
            GateName::Syntax => "syntax",
            GateName::TestsPassed => "tests_passed",
            GateName::PromotedFrom => "promoted_from",
            GateName::Approval => "approval",
            GateName::BackupCreated => "backup_created",
            GateName::BackupVerified => "backup_verified",
            GateName::BusinessHours => "business_hours",
            GateName::MaintenanceWindow => "maintenance_window",
            GateName::Performance => "performance",
            GateName::ChangeTicket => "change_ticket",
            GateName::StakeholderSignoff => "stakeholder_signoff",
            GateName::Runbook => "runbook",
            GateName::RollbackPlan => "rollback_plan",
            GateName::Monitoring => "monitoring",
            GateName::NoDrift => "no_drift",
        }
    }
}

impl Environment {
    /// The configured gates, plus those SEED.md's flags imply.
    /// Issue 24: a fleet of targets rather than one zone's `target`.
    pub fn is_fleet(&self) -> bool {
        !self.targets.is_empty() || !self.zones.is_empty() || !self.labels.is_empty()
    }

    pub fn effective_gates(&self) -> Vec<GateName> {
        let mut gates = self.gates.clone();
        if self.require_approval {
            gates.push(GateName::Approval);
        }
        if self.maintenance_window.is_some() {
            gates.push(GateName::MaintenanceWindow);
        }
        if self.promote_from.is_some() {
            gates.push(GateName::PromotedFrom);
        }
        gates.sort_unstable();
        gates.dedup();
        gates
    }
}

/// The shortest `drift_scan_interval`: a scan is one catalog query, but one
/// per second per environment is already more than drift needs.
pub const MIN_DRIFT_SCAN_INTERVAL: Duration = Duration::from_secs(1);

fn one() -> u32 {
    1
}

fn default_target() -> String {
    "main".to_owned()
}

impl ControllerConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: ControllerConfig = pgrollout_shared::config_loader::load(path, ENV_PREFIX)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.environments.is_empty() {
            anyhow::bail!("invalid controller config: environments: at least one [environments.<name>] is needed");
        }
        for (name, environment) in &self.environments {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                anyhow::bail!("invalid controller config: environments.{name}: names use letters, digits, - and _");
            }
            let key =
                |field: &str| format!("invalid controller config: environments.{name}.{field}");
            if let Some(from) = &environment.promote_from {
                if !self.environments.contains_key(from) || from == name {
                    anyhow::bail!(
                        "{}: {from:?} is not another environment of this config",
                        key("promote_from")
                    );
                }
            }
            for (field, window) in [
                ("maintenance_window", &environment.maintenance_window),
                ("business_hours", &environment.business_hours),
            ] {
                if let Some(window) = window {
                    window::TimeWindow::parse(window)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", key(field)))?;
                }
            }
            fleet::validate(
                &environment.targets,
                &environment.labels,
                environment.rollout.as_ref(),
            )
            .map_err(|e| anyhow::anyhow!("{}", key(&e)))?;
            if environment.is_fleet() && environment.zone.is_some() {
                anyhow::bail!(
                    "{}: a fleet environment (targets, zones or labels) names its zones in `zones` or `targets`",
                    key("zone")
                );
            }
            let gates = environment.effective_gates();
            let needs = |gate: GateName, present: bool, field: &str| {
                if gates.contains(&gate) && !present {
                    anyhow::bail!(
                        "{}: the {} gate needs `{field}` to be set",
                        key("gates"),
                        gate.as_str()
                    );
                }
                Ok(())
            };
            needs(
                GateName::PromotedFrom,
                environment.promote_from.is_some(),
                "promote_from",
            )?;
            needs(
                GateName::TestsPassed,
                environment.promote_from.is_some(),
                "promote_from",
            )?;
            needs(
                GateName::Performance,
                environment.promote_from.is_some(),
                "promote_from (the environment whose probes it reads)",
            )?;
            if !(1..=10_000).contains(&environment.performance_threshold_percent) {
                anyhow::bail!("{}: 1 to 10000", key("performance_threshold_percent"));
            }
            if environment
                .drift_scan_interval
                .is_some_and(|every| every < MIN_DRIFT_SCAN_INTERVAL)
            {
                anyhow::bail!(
                    "{}: at least {} (each scan reads the whole catalog of the target)",
                    key("drift_scan_interval"),
                    humantime::format_duration(MIN_DRIFT_SCAN_INTERVAL)
                );
            }
            needs(
                GateName::BusinessHours,
                environment.business_hours.is_some(),
                "business_hours",
            )?;
            needs(
                GateName::MaintenanceWindow,
                environment.maintenance_window.is_some(),
                "maintenance_window",
            )?;
            if environment.approvals == 0 {
                anyhow::bail!("{}: at least 1", key("approvals"));
            }
            if environment.target.trim().is_empty() {
                anyhow::bail!(
                    "invalid controller config: environments.{name}.target: must not be empty"
                );
            }
        }
        if let Some(tls) = &self.tls {
            if !pgrollout_shared::identity::is_valid_segment(&tls.trust_domain) {
                anyhow::bail!(
                    "invalid controller config: tls.trust_domain: 1-63 of a-z, 0-9, '-', '_', '.'"
                );
            }
        }
        for name in self.operators.keys() {
            if !pgrollout_shared::identity::is_valid_segment(name) {
                anyhow::bail!("invalid controller config: operators.{name}: names use a-z, 0-9, '-', '_', '.'");
            }
        }
        // `[security] revoked` is not validated here: a malformed entry must
        // not stop the well-formed ones from applying (auth/revocation.rs).
        if self.limits.max_message_bytes < 64 * 1024 || self.limits.max_routines_per_plan == 0 {
            anyhow::bail!("invalid controller config: limits: max_message_bytes >= 65536 and max_routines_per_plan >= 1");
        }
        if self.deployment.job_timeout < Duration::from_secs(1) {
            anyhow::bail!("invalid controller config: deployment.job_timeout: must be at least 1s");
        }
        if self.deployment.rollback_timeout < Duration::from_secs(1) {
            anyhow::bail!(
                "invalid controller config: deployment.rollback_timeout: must be at least 1s"
            );
        }
        if let Some(notifications) = &self.notifications {
            notifications.validate(self.environments.keys())?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.validate()?;
        }
        if let Some(change_control) = &self.change_control {
            change_control.validate()?;
        }
        if let Some(retention) = &self.store.retention {
            retention.validate()?;
        }
        match (&self.store.url, self.store.path.as_os_str().is_empty()) {
            (Some(_), false) => anyhow::bail!(
                "invalid controller config: store: give either path (SQLite) or url (PostgreSQL), not both"
            ),
            (None, true) => anyhow::bail!(
                "invalid controller config: store: path is required (or url for a PostgreSQL store)"
            ),
            (Some(_), true) if self.audit.key_file.is_none() => anyhow::bail!(
                "invalid controller config: audit.key_file is required with a PostgreSQL store \
                 (the key that authenticates the audit log must live outside the store)"
            ),
            _ => {}
        }
        Ok(())
    }

    /// The zone an environment lives in.
    pub fn zone_of(&self, environment: &str) -> Option<String> {
        self.environments
            .get(environment)
            .map(|e| e.zone.clone().unwrap_or_else(|| environment.to_owned()))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_store_url_is_shown_without_its_password() {
        use super::redacted_url;
        assert_eq!(
            redacted_url("postgres://ops:s3cr%40t@db.example:5432/pgrollout?sslmode=require"),
            "postgres://ops:***@db.example:5432/pgrollout?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgresql://ops@db/x?password=hunter2&sslmode=disable"),
            "postgresql://ops@db/x?password=***&sslmode=disable"
        );
        assert_eq!(
            redacted_url("host=db user=ops password=hunter2 dbname=x"),
            "host=db user=ops password=*** dbname=x"
        );
        assert_eq!(redacted_url("postgres://ops@db/x"), "postgres://ops@db/x");
    }

    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/controller.toml");
        let config = ControllerConfig::load(&path).expect("example config is valid");
        assert_eq!(config.zone_of("prod").as_deref(), Some("prod"));
        assert_eq!(config.environments["dev"].target, "main");
        let prod = &config.environments["prod"];
        assert_eq!(prod.promote_from.as_deref(), Some("qa"));
        assert!(prod
            .effective_gates()
            .contains(&GateName::MaintenanceWindow));
        assert!(prod.effective_gates().contains(&GateName::Approval));
        assert_eq!(prod.backup_retention_days, Some(90));
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
    }

    #[test]
    fn gates_without_their_settings_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[listen]\noperators='127.0.0.1:1'\nagents='127.0.0.1:2'\n[store]\npath='x'\n[environments.qa]\ngates=['business_hours']\n",
        )
        .expect("write");
        let error = format!("{:#}", ControllerConfig::load(&path).expect_err("no hours"));
        assert!(
            error.contains("environments.qa.gates: the business_hours gate needs `business_hours`"),
            "{error}"
        );
        std::fs::write(
            &path,
            "[listen]\noperators='127.0.0.1:1'\nagents='127.0.0.1:2'\n[store]\npath='x'\n[environments.qa]\nmaintenance_window='2-4'\n",
        )
        .expect("write");
        let error = format!(
            "{:#}",
            ControllerConfig::load(&path).expect_err("bad window")
        );
        assert!(
            error.contains("environments.qa.maintenance_window"),
            "{error}"
        );
    }

    #[test]
    fn the_performance_gate_needs_an_environment_to_read_probes_from() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.toml");
        let config = |prod: &str| {
            format!(
                "[listen]\noperators='127.0.0.1:1'\nagents='127.0.0.1:2'\n[store]\npath='x'\n\
                 [environments.qa]\nrun_perf_probe=true\n[environments.prod]\ngates=['performance']\n{prod}"
            )
        };
        std::fs::write(&path, config("")).expect("write");
        let error = format!(
            "{:#}",
            ControllerConfig::load(&path).expect_err("no source")
        );
        assert!(
            error.contains("environments.prod.gates: the performance gate needs `promote_from"),
            "{error}"
        );
        std::fs::write(
            &path,
            config("promote_from='qa'\nperformance_threshold_percent=0\n"),
        )
        .expect("write");
        let error = format!("{:#}", ControllerConfig::load(&path).expect_err("zero"));
        assert!(
            error.contains("environments.prod.performance_threshold_percent"),
            "{error}"
        );
        std::fs::write(&path, config("promote_from='qa'\n")).expect("write");
        let loaded = ControllerConfig::load(&path).expect("valid");
        assert_eq!(
            loaded.environments["prod"].performance_threshold_percent,
            120
        );
        assert!(loaded.environments["qa"].run_perf_probe);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[listen]\noperators='127.0.0.1:1'\nagents='127.0.0.1:2'\n[store]\npath='x'\n[environments.dev]\nzonee='dev'\n",
        )
        .expect("write");
        let error = format!("{:#}", ControllerConfig::load(&path).expect_err("typo"));
        assert!(error.contains("zonee"), "{error}");
    }
}
