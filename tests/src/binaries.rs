//! The built `pgrollout` and `pgrollout-agent` binaries, and running commands to completion.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::clear_inherited_pgrollout_env;

/// How long [`Binaries::run_cli`] lets one CLI command run before killing it.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Overrides where [`Binaries::locate`] looks, e.g. to test a release build.
const BIN_DIR_ENV: &str = "PGROLLOUT_TEST_BIN_DIR";
/// How long to wait for the pipes to close after the process exited (a grandchild may hold them open).
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Paths of the two binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `pgrollout`: the controller and the operator CLI.
    pub controller: PathBuf,
    /// `pgrollout-agent`.
    pub agent: PathBuf,
}

impl Binaries {
    /// Finds the binaries built next to the running test: the test executable is
    /// `target/<profile>/deps/<test>-<hash>`, the binaries are in `target/<profile>`.
    /// `PGROLLOUT_TEST_BIN_DIR` overrides the directory.
    ///
    /// `cargo test` does not build other packages' binaries: run `cargo build --workspace --bins` first.
    pub fn locate() -> Result<Binaries> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return Self::in_dir(Path::new(&dir));
        }
        let exe = std::env::current_exe().context("finding the test executable")?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .with_context(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
        Self::in_dir(profile_dir)
    }

    /// The binaries in `dir`, which must both exist.
    pub fn in_dir(dir: &Path) -> Result<Binaries> {
        let binaries = Self::from_paths(dir.join("pgrollout"), dir.join("pgrollout-agent"));
        for path in [&binaries.controller, &binaries.agent] {
            if !path.is_file() {
                bail!(
                    "{} not found: run `cargo build --workspace --bins` first",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// Explicit paths, unchecked (e.g. stand-ins in the harness's own tests).
    pub fn from_paths(controller: impl Into<PathBuf>, agent: impl Into<PathBuf>) -> Binaries {
        Binaries {
            controller: controller.into(),
            agent: agent.into(),
        }
    }

    /// Runs the CLI (`pgrollout <args>`) to completion with the extra environment `envs`; kills it and fails
    /// after [`CLI_TIMEOUT`]. A non-zero exit is not an error: check [`CommandOutput::code`].
    pub async fn run_cli<I, S>(&self, args: I, envs: &[(&str, &str)]) -> Result<CommandOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(&self.controller, args, envs, CLI_TIMEOUT).await
    }
}

/// What a finished command printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `128 + signal` when killed by a signal, as shells report it.
    pub code: i32,
    /// Everything printed on stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// Everything printed on stderr (invalid UTF-8 replaced).
    pub stderr: String,
}

impl CommandOutput {
    /// The id of the rollout (`r-…`) a deploy or rollback printed on its
    /// `rollout <id> on agent …` line.
    pub fn rollout_id(&self) -> anyhow::Result<String> {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix("rollout ")?.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no rollout id in:\n{self}"))
    }

    /// The id of the request (`p-…`) the command printed: a deploy parked
    /// for approvals or scheduled for its window.
    pub fn request_id(&self) -> anyhow::Result<String> {
        format!("{}\n{}", self.stdout, self.stderr)
            .split_whitespace()
            .find(|w| w.starts_with("p-"))
            .map(|w| {
                w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                    .to_owned()
            })
            .ok_or_else(|| anyhow::anyhow!("no request id in:\n{self}"))
    }
}

impl fmt::Display for CommandOutput {
    /// All of it, for assertion messages: `assert_eq!(out.code, 0, "{out}")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `program` to completion with the extra environment `envs` (inherited `PGROLLOUT_*` variables removed)
/// and stdin closed; kills it and fails, with what it printed so far, after `timeout`.
pub async fn run_command<I, S>(
    program: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Result<CommandOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = program.as_ref();
    let args: Vec<_> = args
        .into_iter()
        .map(|arg| arg.as_ref().to_owned())
        .collect();
    let shown = format!(
        "`{} {}`",
        program.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut command = Command::new(program);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clear_inherited_pgrollout_env(&mut command);
    command.envs(envs.iter().copied());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let stdout = Collector::start(child.stdout.take());
    let stderr = Collector::start(child.stderr.take());

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.with_context(|| format!("waiting for {shown}"))?,
        Err(_elapsed) => {
            child
                .start_kill()
                .with_context(|| format!("killing {shown}"))?;
            let _ = child.wait().await;
            bail!(
                "{shown} did not finish within {timeout:?}; killed it\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
                stdout.finish().await,
                stderr.finish().await
            );
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1);
    Ok(CommandOutput {
        code,
        stdout: stdout.finish().await,
        stderr: stderr.finish().await,
    })
}

/// Reads a pipe into a buffer that stays readable while the reading goes on, so a timeout can show what came.
struct Collector {
    buffer: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(pipe: Option<impl AsyncRead + Unpin + Send + 'static>) -> Collector {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let buffer = Arc::clone(&buffer);
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
                    buffer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&chunk[..read]);
                }
            })
        });
        Collector { buffer, task }
    }

    /// Waits a little for the pipe's end, then returns what was read.
    async fn finish(mut self) -> String {
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(PIPE_DRAIN_TIMEOUT, task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let bytes = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
