//! A whole pgrollout installation for one scenario: a PostgreSQL cluster per
//! zone with the sample schema, a controller, an agent per zone, and an
//! editable copy of the sample project — all real processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{free_port, Binaries, CommandOutput, PgCluster, Process, TestDir};

/// How long a process may take to say it is ready.
const READY: Duration = Duration::from_secs(20);
/// The environment variable agents read their database password from.
pub const PASSWORD_ENV: &str = "PGROLLOUT_TEST_DB_PASSWORD";

/// Knobs for [`Stack::start_with`].
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Zones to create; each gets an environment of the same name.
    pub zones: Vec<String>,
    /// Start an agent per zone (false: only clusters and the controller).
    pub start_agents: bool,
    /// Extra lines for each agent's `[timeouts]` table.
    pub agent_timeouts: String,
    /// Extra keys for each agent's target table (e.g. `post_commit_connections = 1`).
    pub agent_target_extra: String,
    /// Run the controller with `--dev-plaintext` instead of mutual TLS.
    pub plaintext: bool,
    /// Extra TOML appended to the controller's config (e.g. `[security]`).
    pub controller_extra: String,
    /// Extra lines for the controller's `[deployment]` table (e.g. `rollback_timeout = "2s"`).
    pub deployment_extra: String,
    /// Extra keys for one environment's table: `(zone, "promote_from = \"dev\"")`.
    pub environment_extra: Vec<(String, String)>,
    /// A PostgreSQL store (`[store] url`) instead of the SQLite file; the
    /// audit key then lives in the stack's directory (`[audit] key_file`).
    pub store_url: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            zones: vec!["dev".into()],
            start_agents: true,
            agent_timeouts: String::new(),
            agent_target_extra: String::new(),
            plaintext: false,
            controller_extra: String::new(),
            deployment_extra: String::new(),
            environment_extra: Vec::new(),
            store_url: None,
        }
    }
}

/// One zone: its database and (when running) its agent.
pub struct Zone {
    pub pg: PgCluster,
    pub agent: Option<Process>,
    pub agent_config: PathBuf,
    pub backup_dir: PathBuf,
}

pub struct Stack {
    pub bins: Binaries,
    pub controller: Process,
    /// `http://127.0.0.1:<port>` of the operators' listener.
    pub operators: String,
    pub agents_address: String,
    pub zones: BTreeMap<String, Zone>,
    /// The editable copy of `deploy/examples/project`.
    pub project: PathBuf,
    /// The built-in CA's directory (certificates for every party).
    pub ca_dir: PathBuf,
    pub plaintext: bool,
    /// The PostgreSQL store's own cluster, when the stack started one
    /// (`PGROLLOUT_TEST_STORE=postgres`).
    pub store_cluster: Option<PgCluster>,
    pub dir: TestDir,
}

/// The trust domain of every test CA.
pub const TRUST_DOMAIN: &str = "test.local";
/// The operator the CLI runs as; granted deployer and viewer.
pub const OPERATOR: &str = "test-operator";

impl Stack {
    /// Clusters, controller and agents for the given zones, everything ready.
    pub async fn start(zones: &[&str]) -> Result<Stack> {
        Stack::start_with(StackOptions {
            zones: zones.iter().map(|z| z.to_string()).collect(),
            ..StackOptions::default()
        })
        .await
    }

    pub async fn start_with(options: StackOptions) -> Result<Stack> {
        let bins = Binaries::locate()?;
        let dir = TestDir::new("stack")?;
        let project = dir.path().join("project");
        copy_dir(&repo_root().join("deploy/examples/project"), &project)?;

        let ca_dir = dir.path().join("ca");
        if !options.plaintext {
            issue_certificates(&bins, &ca_dir, &options.zones).await?;
        }
        let operators_port = free_port();
        let agents_port = free_port();
        let environments: String = options
            .zones
            .iter()
            .map(|z| {
                let extra: String = options
                    .environment_extra
                    .iter()
                    .filter(|(zone, _)| zone == z)
                    .map(|(_, lines)| format!("{lines}\n"))
                    .collect();
                format!("[environments.{z}]\nzone = \"{z}\"\n{extra}")
            })
            .collect();
        let tls = if options.plaintext {
            String::new()
        } else {
            format!(
                "[tls]\nca = \"{ca}/ca.pem\"\ncert = \"{ca}/controller-main.pem\"\nkey = \"{ca}/controller-main.key\"\n\
                 trust_domain = \"{TRUST_DOMAIN}\"\n[operators]\n{OPERATOR} = [\"deployer\", \"viewer\"]\nlooker = [\"viewer\"]\napprover-1 = [\"approver\", \"deployer\", \"viewer\"]\napprover-2 = [\"approver\"]\nsigner = [\"stakeholder\"]\n",
                ca = ca_dir.display()
            )
        };
        // PGROLLOUT_TEST_STORE=postgres runs any stack's controller on a
        // PostgreSQL store of its own (issue 18), to try a scenario on it.
        let store_cluster = match (&options.store_url, std::env::var("PGROLLOUT_TEST_STORE")) {
            (None, Ok(backend)) if backend == "postgres" => Some(PgCluster::start("store").await?),
            _ => None,
        };
        let store_url = options
            .store_url
            .clone()
            .or_else(|| store_cluster.as_ref().map(PgCluster::url));
        let store = match &store_url {
            None => format!(
                "[store]\npath = \"{}\"\n",
                dir.path().join("controller.sqlite").display()
            ),
            Some(url) => format!(
                "[store]\nurl = \"{url}\"\n[audit]\nkey_file = \"{}\"\n",
                dir.path().join("audit.key").display()
            ),
        };
        let controller_config = dir.path().join("controller.toml");
        std::fs::write(
            &controller_config,
            format!(
                "[listen]\noperators = \"127.0.0.1:{operators_port}\"\nagents = \"127.0.0.1:{agents_port}\"\n\
                 {store}[deployment]\naccept_timeout = \"5s\"\nheartbeat_interval = \"1s\"\n{}\n{environments}{tls}{}",
                options.deployment_extra,
                options.controller_extra,
            ),
        )?;
        let mut controller_args: Vec<String> = vec![
            "serve".into(),
            "--config".into(),
            controller_config.to_string_lossy().into(),
        ];
        if options.plaintext {
            controller_args.push("--dev-plaintext".into());
        }
        let controller = Process::spawn(&bins.controller, &controller_args, &[], "controller")?;
        controller
            .wait_for_line("controller listening", READY)
            .await?;

        let mut zones = BTreeMap::new();
        for zone in &options.zones {
            let pg = PgCluster::start(zone).await?;
            pg.psql_file(repo_root().join("deploy/examples/project/schema.sql"))
                .await
                .context("applying the sample schema")?;
            let backup_dir = dir.path().join(format!("backups-{zone}"));
            let agent_config = dir.path().join(format!("agent-{zone}.toml"));
            let tls_ca = (!options.plaintext).then_some(ca_dir.as_path());
            std::fs::write(
                &agent_config,
                agent_config_text(
                    zone,
                    agents_port,
                    &backup_dir,
                    &pg,
                    &options.agent_timeouts,
                    tls_ca,
                ) + &options.agent_target_extra,
            )?;
            zones.insert(
                zone.clone(),
                Zone {
                    pg,
                    agent: None,
                    agent_config,
                    backup_dir,
                },
            );
        }
        let scheme = if options.plaintext { "http" } else { "https" };
        let mut stack = Stack {
            bins,
            controller,
            operators: format!("{scheme}://127.0.0.1:{operators_port}"),
            agents_address: format!("{scheme}://127.0.0.1:{agents_port}"),
            ca_dir,
            plaintext: options.plaintext,
            store_cluster,
            zones,
            project,
            dir,
        };
        if options.start_agents {
            for zone in options.zones {
                stack.start_agent(&zone).await?;
            }
        }
        Ok(stack)
    }

    /// Starts (or restarts) the zone's agent and waits until it is connected.
    pub async fn start_agent(&mut self, zone: &str) -> Result<()> {
        let entry = self.zones.get_mut(zone).context("no such zone")?;
        let password = entry.pg.password().to_owned();
        let agent = Process::spawn(
            &self.bins.agent,
            ["--config", &entry.agent_config.to_string_lossy()],
            &[(PASSWORD_ENV, &password)],
            &format!("agent-{zone}"),
        )?;
        agent
            .wait_for_line("connected to controller", READY)
            .await?;
        entry.agent = Some(agent);
        Ok(())
    }

    /// The port agents dial on the controller.
    pub fn agents_port(&self) -> u16 {
        self.agents_address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_default()
    }

    /// Points the zone's agent config at `port` (a proxy) instead of the
    /// controller; takes effect when the agent (re)starts.
    pub fn route_agent_via(&self, zone: &str, port: u16) -> Result<()> {
        let path = &self.zone(zone).agent_config;
        let text = std::fs::read_to_string(path)?;
        let direct = format!("127.0.0.1:{}", self.agents_port());
        anyhow::ensure!(
            text.contains(&direct),
            "agent config does not name {direct}"
        );
        std::fs::write(path, text.replace(&direct, &format!("127.0.0.1:{port}")))?;
        Ok(())
    }

    /// Kills the zone's agent with SIGKILL and reaps it.
    pub async fn kill_agent(&mut self, zone: &str) -> Result<()> {
        let entry = self.zones.get_mut(zone).context("no such zone")?;
        if let Some(agent) = entry.agent.as_mut() {
            agent.kill_9()?;
            agent.wait_for_exit(READY).await?;
        }
        Ok(())
    }

    pub fn zone(&self, zone: &str) -> &Zone {
        &self.zones[zone]
    }

    /// The audit log as `pgrollout audit --output json` prints it: one
    /// JSON object per entry.
    pub async fn audit_entries(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.cli(&["audit", "--output", "json"]).await?;
        anyhow::ensure!(out.code == 0, "{out}");
        Ok(serde_json::from_str::<serde_json::Value>(&out.stdout)?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Runs `pgrollout <args>` against this controller as [`OPERATOR`].
    pub async fn cli(&self, args: &[&str]) -> Result<CommandOutput> {
        self.cli_as(OPERATOR, args).await
    }

    /// Runs `pgrollout <args>` with the certificate of `operator` (issued on
    /// first use), from the project.
    pub async fn cli_as(&self, operator: &str, args: &[&str]) -> Result<CommandOutput> {
        self.cli_as_with_env(operator, args, &[]).await
    }

    /// [`Stack::cli_as`] with more environment variables for the CLI, e.g. `OTEL_*`.
    pub async fn cli_as_with_env(
        &self,
        operator: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<CommandOutput> {
        let (full, env) = self.cli_invocation(operator, args).await?;
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra_env);
        self.bins.run_cli(full, &env).await
    }

    /// Starts `pgrollout <args>` as [`OPERATOR`] in the background, for a
    /// test that does something else while the command runs.
    pub async fn spawn_cli(&self, args: &[&str], name: &str) -> Result<Process> {
        self.spawn_cli_as(OPERATOR, args, name).await
    }

    /// [`Stack::spawn_cli`] as `operator` (an approver, say).
    pub async fn spawn_cli_as(&self, operator: &str, args: &[&str], name: &str) -> Result<Process> {
        let (full, env) = self.cli_invocation(operator, args).await?;
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Process::spawn(&self.bins.controller, full, &env, name)
    }

    /// The arguments and environment of a CLI call as `operator`.
    async fn cli_invocation(
        &self,
        operator: &str,
        args: &[&str],
    ) -> Result<(Vec<String>, Vec<(&'static str, String)>)> {
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if matches!(
            args.first(),
            Some(&"deploy")
                | Some(&"smoke")
                | Some(&"batch")
                | Some(&"plan")
                | Some(&"check")
                | Some(&"perf")
                | Some(&"retire")
        ) {
            full.extend([
                "--project".to_owned(),
                self.project.to_string_lossy().into(),
            ]);
        }
        let ca = self.ca_dir.join("ca.pem");
        let cert = self.ca_dir.join(format!("operator-{operator}.pem"));
        let key = self.ca_dir.join(format!("operator-{operator}.key"));
        if !self.plaintext && !cert.exists() {
            let dir = self.ca_dir.to_string_lossy().to_string();
            let out = self
                .bins
                .run_cli(
                    ["ca", "issue", "operator", "--dir", &dir, "--name", operator],
                    &[],
                )
                .await?;
            anyhow::ensure!(
                out.code == 0,
                "issuing an operator certificate failed: {out}"
            );
        }
        let mut env = vec![
            ("PGROLLOUT_ADDR", self.operators.clone()),
            ("PGROLLOUT_ACTOR", operator.to_owned()),
        ];
        if !self.plaintext {
            env.extend([
                ("PGROLLOUT_CA", ca.to_string_lossy().into()),
                ("PGROLLOUT_CERT", cert.to_string_lossy().into()),
                ("PGROLLOUT_KEY", key.to_string_lossy().into()),
            ]);
        }
        Ok((full, env))
    }

    /// Writes `procedures/<file>` in the project copy.
    pub fn write_procedure(&self, file: &str, text: &str) -> Result<()> {
        std::fs::write(self.project.join("procedures").join(file), text)
            .with_context(|| format!("writing procedures/{file}"))
    }

    /// Writes each `(name, statement, sidecar)` as `procedures/<name>.sql` and
    /// `procedures/<name>.toml`, and a batch list naming them in order, in
    /// the test's directory as `<list>.txt`; returns the list's path.
    pub fn write_batch(
        &self,
        list: &str,
        routines: &[(String, String, String)],
    ) -> Result<PathBuf> {
        let mut names = String::new();
        for (name, statement, sidecar) in routines {
            self.write_procedure(&format!("{name}.sql"), statement)?;
            self.write_procedure(&format!("{name}.toml"), sidecar)?;
            names.push_str(name);
            names.push('\n');
        }
        let path = self.dir.path().join(format!("{list}.txt"));
        std::fs::write(&path, names).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `pgrollout batch <environment> <list> --output json`, which must exit
    /// 0, then its rollout as `pgrollout status <rollout> --output json`
    /// shows it: the result with every smoke report.
    pub async fn batch_status(&self, environment: &str, list: &Path) -> Result<serde_json::Value> {
        let list = list.to_string_lossy();
        let out = self
            .cli(&["batch", environment, &list, "--output", "json"])
            .await?;
        anyhow::ensure!(out.code == 0, "the batch failed: {out}");
        let summary: serde_json::Value =
            serde_json::from_str(out.stdout.lines().last().context("a summary line")?)
                .with_context(|| format!("JSON lines:\n{out}"))?;
        let rollout = summary["rollout"].as_str().context("the rollout id")?;
        let out = self.cli(&["status", rollout, "--output", "json"]).await?;
        anyhow::ensure!(out.code == 0, "status failed: {out}");
        serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("one JSON document:\n{out}"))
    }

    /// The rows of `sql` read from the controller's store, whichever backend
    /// it runs on (`PGROLLOUT_TEST_STORE=postgres` or the SQLite file), so a
    /// scenario that checks the store is honest on both. `sql` is portable,
    /// its parameters `$1`, `$2`… (text), every column selected as text.
    pub async fn store_rows(&self, sql: &str, params: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
        if let Some(cluster) = &self.store_cluster {
            let client = cluster.connect().await?;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let rows = client.query(sql, &params).await?;
            return Ok(rows
                .iter()
                .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
                .collect());
        }
        let store = rusqlite::Connection::open(self.dir.path().join("controller.sqlite"))?;
        let mut statement = store.prepare(sql)?;
        let width = statement.column_count();
        let rows = statement
            .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                (0..width).map(|i| row.get(i)).collect()
            })?
            .collect::<rusqlite::Result<Vec<Vec<Option<String>>>>>()?;
        Ok(rows)
    }

    /// Every entry of the controller's audit log, oldest first, as
    /// `action|outcome|actor|details` lines, read from its store file.
    pub fn audit_lines(&self) -> Result<Vec<String>> {
        let store = rusqlite::Connection::open(self.dir.path().join("controller.sqlite"))?;
        let mut statement = store.prepare(
            "SELECT action || '|' || outcome || '|' || actor || '|' || details FROM audit_log ORDER BY seq",
        )?;
        let lines = statement
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(lines)
    }

    /// Every log line and CLI output the stack's processes produced so far.
    pub fn all_process_output(&self) -> String {
        let mut text = self.controller.output_so_far();
        for zone in self.zones.values() {
            if let Some(agent) = &zone.agent {
                text.push_str(&agent.output_so_far());
            }
        }
        text
    }
}

/// Creates the test CA and certificates for the controller and each zone's
/// agent, with the real `pgrollout ca` commands.
pub async fn issue_certificates(bins: &Binaries, ca_dir: &Path, zones: &[String]) -> Result<()> {
    let dir = ca_dir.to_string_lossy().to_string();
    let run = |args: Vec<String>| async move {
        let out = bins.run_cli(&args, &[]).await?;
        anyhow::ensure!(out.code == 0, "pgrollout {}: {out}", args.join(" "));
        Ok::<_, anyhow::Error>(())
    };
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    run(strings(&[
        "ca",
        "init",
        "--dir",
        &dir,
        "--trust-domain",
        TRUST_DOMAIN,
    ]))
    .await?;
    run(strings(&[
        "ca",
        "issue",
        "controller",
        "--dir",
        &dir,
        "--name",
        "main",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]))
    .await?;
    for zone in zones {
        run(strings(&[
            "ca",
            "issue",
            "agent",
            "--dir",
            &dir,
            "--zone",
            zone,
            "--name",
            &format!("{zone}-1"),
        ]))
        .await?;
    }
    Ok(())
}

/// An agent config for `zone`'s cluster; the password comes from
/// [`PASSWORD_ENV`], never from the file. With `ca_dir`, the agent uses its
/// certificate from the test CA and an `https://` controller address.
pub fn agent_config_text(
    zone: &str,
    agents_port: u16,
    backup_dir: &Path,
    pg: &PgCluster,
    timeouts: &str,
    ca_dir: Option<&Path>,
) -> String {
    let (scheme, tls) = match ca_dir {
        Some(ca) => (
            "https",
            format!(
                "[tls]\nca = \"{ca}/ca.pem\"\ncert = \"{ca}/agent-{zone}-{zone}-1.pem\"\nkey = \"{ca}/agent-{zone}-{zone}-1.key\"\n",
                ca = ca.display()
            ),
        ),
        None => ("http", String::new()),
    };
    format!(
        "name = \"{zone}-1\"\nzone = \"{zone}\"\ncontroller = \"{scheme}://127.0.0.1:{agents_port}\"\n\
         backup_dir = \"{}\"\n{tls}[timeouts]\nheartbeat = \"1s\"\n{timeouts}\n[[targets]]\nname = \"main\"\n\
         host = \"{}\"\nport = {}\ndbname = \"{}\"\nuser = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
        backup_dir.display(),
        pg.host(),
        pg.port(),
        pg.dbname(),
        pg.superuser(),
    )
}

/// The repository root (the tests crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
