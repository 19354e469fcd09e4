//! Throwaway PostgreSQL clusters: a copy of an `initdb`-made template (see `pg_template`) started by `pg_ctl` in
//! a temp dir of its own, on a free port of 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio_postgres::{Client, NoTls};

use crate::pg_template::{self, SETTINGS_FILE, SUPERUSER};
use crate::{os_user, pg_bin_dir, ports::free_port, test_dir, TestDir};

const HOST: &str = "127.0.0.1";
/// How many ports a start tries when another process takes the free port first.
const START_ATTEMPTS: usize = 5;
/// Bound on any one `psql` run of [`PgCluster::execute_sql`] or [`PgCluster::psql_file`].
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);
/// Log lines shown in errors and post-mortems.
const LOG_TAIL_LINES: usize = 30;

/// A PostgreSQL cluster of its own for one test: its data directory in a [`TestDir`], listening on 127.0.0.1 on a
/// free port, with a superuser `postgres` whose random password TCP connections must give (scram-sha-256), and a
/// database made for the test.
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and removes the directory, unless the test is
/// panicking: then the directory, with the server log, is kept for post-mortem and its path printed.
#[derive(Debug)]
pub struct PgCluster {
    name: String,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    password: String,
    dbname: String,
    running: AtomicBool,
    /// Declared last so it is dropped after [`Drop::drop`] has stopped the server.
    dir: TestDir,
}

impl PgCluster {
    /// Creates and starts a cluster named `name` (used in the temp dir, the database `pgrollout_<name>` and
    /// messages). Several may start in parallel. Must be called inside a tokio runtime.
    pub async fn start(name: &str) -> Result<PgCluster> {
        let began = Instant::now();
        let dir = TestDir::new_in(&test_dir::cluster_parent_dir(), &format!("pg-{name}"))?;
        os_user::hand_over_to_postgres(dir.path())?;
        let mut cluster = PgCluster {
            name: name.to_owned(),
            bin_dir: pg_bin_dir()?,
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("server.log"),
            port: 0,
            password: random_password(),
            dbname: format!("pgrollout_{}", sanitize_identifier(name)),
            running: AtomicBool::new(false),
            dir,
        };
        cluster.copy_template().await?;
        cluster.start_on_a_free_port().await?;
        cluster.set_password_and_create_database().await?;
        eprintln!(
            "pgrollout-tests: cluster {} up on {HOST}:{} in {:.2?} ({})",
            cluster.name,
            cluster.port,
            began.elapsed(),
            cluster.dir.path().display()
        );
        Ok(cluster)
    }

    /// The name given to [`PgCluster::start`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port; it stays the same across [`PgCluster::stop`] and [`PgCluster::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser, `postgres`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password (random, alphanumeric).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The database created for the test, `pgrollout_<name>`.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Turns `log_connections` on, and returns once a new session's
    /// authorization is logged: the postmaster reads the reload in its own
    /// time, so sessions are opened until one is.
    pub async fn log_connections(&self) -> Result<()> {
        let client = self.connect().await?;
        // Two messages: ALTER SYSTEM refuses the implicit transaction of a
        // multi-statement one.
        client
            .batch_execute("ALTER SYSTEM SET log_connections = on")
            .await?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        for _ in 0..200 {
            let offset = self.log_offset()?;
            drop(self.connect().await?);
            if self.log_since(offset)?.contains("connection authorized") {
                return Ok(());
            }
        }
        bail!(
            "log_connections never reached a new session of {}",
            self.name
        )
    }

    /// Where the server log ends now: an offset for [`PgCluster::sessions_since`].
    pub fn log_offset(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.log_path)?.len())
    }

    /// The connections the server received since byte `offset` of its log
    /// (with [`PgCluster::log_connections`] on), from anyone, authorized or
    /// not: a client that gave up before authenticating counts too.
    pub fn connections_since(&self, offset: u64) -> Result<usize> {
        Ok(self
            .log_since(offset)?
            .lines()
            .filter(|line| line.contains("connection received"))
            .count())
    }

    /// The sessions with `application_name` authorized since byte `offset`
    /// of the server log (with [`PgCluster::log_connections`] on).
    pub fn sessions_since(&self, offset: u64, application_name: &str) -> Result<usize> {
        let named = format!("application_name={application_name}");
        Ok(self
            .log_since(offset)?
            .lines()
            .filter(|line| line.contains("connection authorized") && line.contains(&named))
            .count())
    }

    /// What the server logged after byte `offset` of its log.
    fn log_since(&self, offset: u64) -> Result<String> {
        let log = std::fs::read(&self.log_path)?;
        Ok(String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default()).into_owned())
    }

    /// Whether the server runs, as far as this handle knows (it started it and did not stop it).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Connection settings for the test database as the superuser, over TCP with the password.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(HOST)
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname(&self.dbname)
            .application_name("pgrollout-tests")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<dbname>`, e.g. for an agent's config.
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@{HOST}:{}/{}",
            self.password, self.port, self.dbname
        )
    }

    /// A client connected to the test database as the superuser; a spawned task drives the connection.
    pub async fn connect(&self) -> Result<Client> {
        connect(&self.config())
            .await
            .with_context(|| format!("connecting to cluster {}", self.name))
    }

    /// The server's major version (`server_version_num` / 10000): scenarios whose SQL or expectations differ
    /// between majors (`PGROLLOUT_TEST_PG_BIN`) ask it.
    pub async fn server_major(&self) -> Result<u32> {
        let num: String = self
            .connect()
            .await?
            .query_one("SELECT current_setting('server_version_num')", &[])
            .await?
            .get(0);
        Ok(num.parse::<u32>().context("server_version_num")? / 10_000)
    }

    /// Runs `sql` (any number of statements, psql meta-commands allowed) through `psql -v ON_ERROR_STOP=1` on
    /// the test database, returning what psql printed; on failure the error carries PostgreSQL's message.
    pub async fn execute_sql(&self, sql: &str) -> Result<String> {
        self.psql(None, sql).await
    }

    /// Applies a SQL file (e.g. a schema) like [`PgCluster::execute_sql`].
    pub async fn psql_file(&self, path: impl AsRef<Path>) -> Result<String> {
        self.psql(Some(path.as_ref()), "").await
    }

    /// Stops the server the fast way (`pg_ctl stop -m fast`), keeping the data directory and the port, for
    /// fault tests; [`PgCluster::restart`] starts it again. A no-op when already stopped.
    pub async fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast").await
    }

    /// Stops the server like a crash (`pg_ctl stop -m immediate`: no shutdown checkpoint, recovery on the next
    /// start). A no-op when already stopped.
    pub async fn crash(&self) -> Result<()> {
        self.pg_ctl_stop("immediate").await
    }

    /// Starts the server again on the same port and data directory, stopping it first (fast) if it runs.
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.pg_ctl_start().await.map_err(|failure| failure.error)
    }

    /// Turns TLS on with this server certificate (chain) and key, both PEM, and refuses TCP connections without
    /// TLS (`hostssl` lines only in `pg_hba.conf`), so a client that gets in has proved it used TLS; then
    /// restarts the server. Afterwards [`PgCluster::connect`] (plaintext) is refused, while
    /// [`PgCluster::execute_sql`] still works (psql's default sslmode, `prefer`, encrypts when it can).
    pub async fn require_tls(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        // Relative to the data directory, which the server runs in.
        let files = [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ];
        for (file, pem, mode) in files {
            let path = self.data_dir.join(file);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            // The server refuses a key readable by others, and must own it when the tests run as root.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
            os_user::hand_over_to_postgres(&path)?;
        }
        let settings_path = self.data_dir.join(SETTINGS_FILE);
        let mut settings = std::fs::read_to_string(&settings_path)
            .with_context(|| format!("reading {}", settings_path.display()))?;
        settings.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&settings_path, settings)
            .with_context(|| format!("writing {}", settings_path.display()))?;
        // The Unix socket stays trusted: the harness sets the cluster up through it.
        let hba_path = self.data_dir.join("pg_hba.conf");
        std::fs::write(
            &hba_path,
            "local   all all               trust\n\
             hostssl all all 127.0.0.1/32  scram-sha-256\n\
             hostssl all all ::1/128       scram-sha-256\n",
        )
        .with_context(|| format!("writing {}", hba_path.display()))?;
        self.restart()
            .await
            .with_context(|| format!("restarting cluster {} with TLS", self.name))
    }

    /// Makes the data directory: a copy of the template made once by initdb (see `pg_template`).
    async fn copy_template(&self) -> Result<()> {
        let template = pg_template::template_data_dir(&self.bin_dir).await?;
        let data_dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || pg_template::copy_template(&template, &data_dir))
            .await
            .context("copying the template cluster")?
    }

    fn write_settings(&self) -> Result<()> {
        let settings = format!(
            "listen_addresses = '{HOST}'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             # Tests only: a crash of the machine may lose the cluster, which is thrown away anyway.\n\
             fsync = off\n\
             max_connections = 50\n\
             shared_buffers = 32MB\n\
             track_functions = 'all'\n",
            port = self.port,
            socket_dir = self.data_dir.display(),
        );
        let path = self.data_dir.join(SETTINGS_FILE);
        std::fs::write(&path, settings).with_context(|| format!("writing {}", path.display()))?;
        os_user::hand_over_to_postgres(&path)
    }

    /// Starts the server, retrying on another port when someone took the free one in the meantime.
    async fn start_on_a_free_port(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            self.port = free_port();
            self.write_settings()?;
            match self.pg_ctl_start().await {
                Ok(()) => return Ok(()),
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => attempt += 1,
                Err(failure) => return Err(failure.error),
            }
        }
    }

    async fn pg_ctl_start(&self) -> Result<(), StartFailure> {
        let log_offset = std::fs::metadata(&self.log_path)
            .map(|meta| meta.len())
            .unwrap_or(0);
        let output = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", "30", "start"])
            .output()
            .await
            .context("running pg_ctl start")
            .map_err(|error| StartFailure {
                port_taken: false,
                error,
            })?;
        if output.status.success() {
            self.running.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let new_log = read_log_from(&self.log_path, log_offset);
        let port_taken = new_log.contains("could not bind")
            || new_log.contains("could not create any TCP/IP sockets");
        let error = anyhow::anyhow!(
            "starting cluster {} on port {} failed ({}): {}\nserver log:\n{}",
            self.name,
            self.port,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            tail(&new_log, LOG_TAIL_LINES)
        );
        Err(StartFailure { port_taken, error })
    }

    async fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let output = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", "30", "stop"])
            .output()
            .await
            .context("running pg_ctl stop")?;
        if !output.status.success() {
            bail!(
                "stopping cluster {} ({mode}) failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Gives the superuser this cluster's own password (over the Unix socket, where the superuser is trusted)
    /// and creates the test database.
    async fn set_password_and_create_database(&self) -> Result<()> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.data_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres");
        let client = connect(&config)
            .await
            .with_context(|| format!("connecting to cluster {}", self.name))?;
        // Both are alphanumeric (see `random_password` and `sanitize_identifier`): nothing to quote. Two
        // round trips, as CREATE DATABASE may not share a multi-statement string.
        for statement in [
            format!("alter role {SUPERUSER} password '{}'", self.password),
            format!("create database \"{}\"", self.dbname),
        ] {
            client.batch_execute(&statement).await.with_context(|| {
                format!(
                    "setting up database {} in cluster {}",
                    self.dbname, self.name
                )
            })?;
        }
        Ok(())
    }

    async fn psql(&self, file: Option<&Path>, stdin_sql: &str) -> Result<String> {
        let psql = crate::pg_binaries::psql_program(&self.bin_dir);
        let mut command = tokio::process::Command::new(&psql);
        command
            .args([
                "-X",
                "-q",
                "-w",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                HOST,
                "-U",
                SUPERUSER,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(&self.dbname)
            .arg("-f")
            .arg(file.unwrap_or(Path::new("-")))
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let what = match file {
            Some(file) => file.display().to_string(),
            None => "SQL".to_owned(),
        };
        let mut child = command
            .spawn()
            .with_context(|| format!("running {}", psql.display()))?;
        let stdin = child.stdin.take();
        // Feed stdin while psql runs: a large input could otherwise fill the pipes both ways.
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // psql stopping early (ON_ERROR_STOP) closes the pipe; its stderr says why.
                let _ = stdin.write_all(stdin_sql.as_bytes()).await;
            }
        };
        let run = async { tokio::join!(feed, child.wait_with_output()).1 };
        let output = tokio::time::timeout(PSQL_TIMEOUT, run)
            .await
            .with_context(|| {
                format!(
                    "psql applying {what} to cluster {} took over {PSQL_TIMEOUT:?}",
                    self.name
                )
            })?
            .context("waiting for psql")?;
        if !output.status.success() {
            bail!(
                "psql applying {what} to cluster {} failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A command for one of the server programs, as the `postgres` OS user when root.
    fn pg_command(&self, program: &str) -> tokio::process::Command {
        let mut command =
            tokio::process::Command::from(os_user::postgres_command(&self.bin_dir.join(program)));
        // The server user may not be allowed into the test's working directory.
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Checked on disk rather than through `running`: a start that failed half-way may have left it running.
        if self.data_dir.join("postmaster.pid").exists() {
            let stopped = os_user::postgres_command(&self.bin_dir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "10", "stop"])
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(stopped, Ok(status) if status.success()) {
                eprintln!(
                    "pgrollout-tests: could not stop cluster {} ({stopped:?})",
                    self.name
                );
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "pgrollout-tests: cluster {} (port {}) server log, last lines:\n{}",
                self.name,
                self.port,
                tail(&read_log_from(&self.log_path, 0), LOG_TAIL_LINES)
            );
        }
    }
}

/// A client for `config`, its connection driven by a spawned task (which reports how the connection ended, if
/// by an error, on stderr). Must be called inside a tokio runtime.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("pgrollout-tests: a PostgreSQL connection ended: {error}");
        }
    });
    Ok(client)
}

struct StartFailure {
    /// The log says the port was in use, so another port may work.
    port_taken: bool,
    error: anyhow::Error,
}

fn read_log_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn random_password() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect()
}

/// Lowercase ASCII letters, digits and `_`, so the name needs no quoting anywhere.
fn sanitize_identifier(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
