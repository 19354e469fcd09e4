//! Long-running child processes (agents, controllers) whose output a test waits on.
//!
//! One reader task per pipe splits the output into lines, appends them to a log file and publishes them on a
//! `watch` channel; [`Process::wait_for_line`] wakes on each new line instead of polling.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::{clear_inherited_pgrollout_env, TestDir};

/// Lines of output shown in errors and post-mortems.
const TAIL_LINES: usize = 40;
/// How long [`Process::terminate_and_wait`] gives a process to exit after SIGTERM.
const TERMINATE_GRACE: Duration = Duration::from_secs(30);
/// How long [`Process::wait_for_exit`] waits, after the exit, for the pipes' last lines.
const OUTPUT_END_GRACE: Duration = Duration::from_secs(5);
/// Set to echo every captured line to stderr as it arrives, prefixed with the process name.
const ECHO_ENV: &str = "PGROLLOUT_TEST_ECHO";

/// A child process with its stdout and stderr captured line by line (both into one sequence, in arrival order)
/// and teed to `<name>.log` in a [`TestDir`] of its own.
///
/// Dropping it kills the child (SIGKILL). When the test is panicking, the last lines of output are printed and
/// the log is kept.
#[derive(Debug)]
pub struct Process {
    name: String,
    pid: u32,
    child: Child,
    lines: watch::Receiver<Vec<String>>,
    log_path: PathBuf,
    /// Declared last so the log stays until everything else is dropped.
    _log_dir: TestDir,
}

/// A position in a [`Process`]'s output, to wait for a line printed after it (see [`Process::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutputMark(usize);

impl Process {
    /// Starts `program` with `args` and the extra environment `envs`, naming it `name` in messages and its log
    /// file. Inherited `PGROLLOUT_*` variables are removed first. Must be called inside a tokio runtime.
    pub fn spawn<I, S>(
        program: impl AsRef<Path>,
        args: I,
        envs: &[(&str, &str)],
        name: &str,
    ) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let log_dir = TestDir::new(&format!("proc-{name}"))?;
        let log_path = log_dir.path().join(format!("{name}.log"));
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        clear_inherited_pgrollout_env(&mut command);
        command.envs(envs.iter().copied());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited before its pid was read"))?;

        let (sender, lines) = watch::channel(Vec::new());
        let echo = std::env::var_os(ECHO_ENV)
            .is_some()
            .then(|| name.to_owned());
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(capture_lines(
                stdout,
                sender.clone(),
                open_log(&log_path)?,
                echo.clone(),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(capture_lines(stderr, sender, open_log(&log_path)?, echo));
        }
        Ok(Process {
            name: name.to_owned(),
            pid,
            child,
            lines,
            log_path,
            _log_dir: log_dir,
        })
    }

    /// The name given to [`Process::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file holding everything the process printed so far.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// All output captured so far, one line per line, stdout and stderr interleaved as they arrived.
    pub fn output_so_far(&self) -> String {
        self.lines
            .borrow()
            .iter()
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// The current end of the output: pass it to [`Process::wait_for_line_after`] to wait for a *new* line,
    /// e.g. the second "deploy finished".
    pub fn mark(&self) -> OutputMark {
        OutputMark(self.lines.borrow().len())
    }

    /// Waits until some line of stdout or stderr, printed at any time since the start, contains `text`, and
    /// returns that line. Fails when `timeout` passes or the process closes its output (it exited), with the
    /// last lines of output in the error.
    pub async fn wait_for_line(&self, text: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line_after(OutputMark(0), text, timeout).await
    }

    /// Like [`Process::wait_for_line`], considering only lines printed after `mark`.
    pub async fn wait_for_line_after(
        &self,
        mark: OutputMark,
        text: &str,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut lines = self.lines.clone();
        let mut next = mark.0;
        loop {
            {
                let seen = lines.borrow_and_update();
                if let Some(line) = seen.iter().skip(next).find(|line| line.contains(text)) {
                    return Ok(line.clone());
                }
                next = next.max(seen.len());
            }
            match tokio::time::timeout_at(deadline, lines.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => bail!(
                    "{} closed its output (exited?) without printing a line containing {text:?}; {}",
                    self.name,
                    self.describe_tail()
                ),
                Err(_elapsed) => bail!(
                    "{} printed no line containing {text:?} within {timeout:?}; {}",
                    self.name,
                    self.describe_tail()
                ),
            }
        }
    }

    /// Sends SIGKILL, like `kill -9`; returns at once (see [`Process::wait_for_exit`]). Only the child itself is
    /// killed, not processes it started, as with a real `kill -9`.
    pub fn kill_9(&mut self) -> Result<()> {
        if self.exit_status()?.is_some() {
            return Ok(());
        }
        self.child
            .start_kill()
            .with_context(|| format!("killing {} (pid {})", self.name, self.pid))
    }

    /// Sends SIGTERM and waits for the process to exit; kills it and fails if it takes over 30 s.
    pub async fn terminate_and_wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit_status()? {
            return Ok(status);
        }
        self.sigterm().await?;
        match self.wait_for_exit(TERMINATE_GRACE).await {
            Ok(status) => Ok(status),
            Err(error) => {
                self.kill_9()?;
                Err(error.context(format!("{} ignored SIGTERM; killed it", self.name)))
            }
        }
    }

    /// Sends signal `name` (`STOP`, `CONT`, `HUP`, …) like `kill -<name>`; returns at once.
    pub fn signal(&self, name: &str) -> Result<()> {
        let sent = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid.to_string()])
            .status()
            .with_context(|| format!("running kill -{name}"))?;
        ensure!(
            sent.success(),
            "kill -{name} {} ({}) failed: {sent}",
            self.pid,
            self.name
        );
        Ok(())
    }

    /// Sends SIGTERM and returns at once: the process may take its time (a drain).
    pub async fn sigterm(&mut self) -> Result<()> {
        // std has no SIGTERM and the workspace forbids `unsafe` (libc::kill), so `kill` does it.
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("running kill -TERM")?;
        if !sent.success() && self.exit_status()?.is_none() {
            bail!("kill -TERM {} ({}) failed: {sent}", self.pid, self.name);
        }
        Ok(())
    }

    /// Waits for the process to exit (and reaps it), then for its output to be read to the end, so that
    /// [`Process::output_so_far`] right after holds everything it printed. The exit status arrives before
    /// the pipes' last bytes do: reading the output at the exit alone once missed a CLI's final line.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.with_context(|| format!("waiting for {} to exit", self.name))?,
            Err(_elapsed) => bail!(
                "{} did not exit within {timeout:?}; {}",
                self.name,
                self.describe_tail()
            ),
        };
        self.wait_for_output_end().await;
        Ok(status)
    }

    /// Waits until both capture tasks have read their pipe to the end. Bounded: a grandchild that inherited
    /// the pipes (none of pgrollout's programs leaves one behind) would keep them open after the exit.
    async fn wait_for_output_end(&self) {
        let mut lines = self.lines.clone();
        let closed = async { while lines.changed().await.is_ok() {} };
        let _ = tokio::time::timeout(OUTPUT_END_GRACE, closed).await;
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking whether {} exited", self.name))
    }

    fn describe_tail(&self) -> String {
        let lines = self.lines.borrow();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        format!(
            "last {} of {} lines of output (all in {}):\n{}",
            tail.len(),
            lines.len(),
            self.log_path.display(),
            tail.join("\n")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL when `child` drops; this only adds the post-mortem.
        if std::thread::panicking() {
            eprintln!(
                "pgrollout-tests: {} (pid {}): {}",
                self.name,
                self.pid,
                self.describe_tail()
            );
        }
    }
}

/// Opens the log for appending; each reader has its own handle, and O_APPEND keeps whole-line writes whole.
fn open_log(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Reads `pipe` to its end, line by line, into the log and the channel.
async fn capture_lines(
    pipe: impl AsyncRead + Unpin,
    lines: watch::Sender<Vec<String>>,
    mut log: std::fs::File,
    echo_as: Option<String>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        // The log is a convenience for post-mortems; the channel is what tests rely on, so a failed write
        // must not stop the capture.
        let _ = log.write_all(format!("{line}\n").as_bytes());
        if let Some(name) = &echo_as {
            eprintln!("[{name}] {line}");
        }
        lines.send_modify(|all| all.push(line));
    }
}
