//! What the post-deploy watch scenarios share (`watch.rs`,
//! `watch_baseline.rs`): routines with a smoke test, calls whose statistics
//! are flushed, `alert create`, a local webhook, and the controller's
//! `watch sampled` lines. Each test crate uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgrollout_tests::{CommandOutput, OutputMark, Process, Stack, StackOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long a sample, a notification or a restart may take to show up.
pub const EVENT: Duration = Duration::from_secs(30);

pub const FAST: &str = "RETURN n + 1;";

pub fn routine(name: &str, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.{name}(n integer) RETURNS integer LANGUAGE plpgsql AS $$\nBEGIN\n  {body}\nEND;\n$$;\n"
    )
}

pub fn write(stack: &Stack, name: &str, body: &str) -> Result<()> {
    stack.write_procedure(&format!("{name}.sql"), &routine(name, body))?;
    stack.write_procedure(
        &format!("{name}.toml"),
        &format!(
            "[[smoke_tests]]\nname = \"adds\"\ncall = \"SELECT public.{name}(1) AS total\"\n\
             expect_columns = [ {{ name = \"total\", type = \"integer\" }} ]\n"
        ),
    )
}

pub async fn deploy(stack: &Stack, name: &str) -> Result<()> {
    let out = stack.cli(&["deploy", name, "dev"]).await?;
    anyhow::ensure!(out.code == 0, "deploy {name}: {out}");
    Ok(())
}

/// Calls `public.<name>(1)` `times` times on one connection, then has that
/// session flush its statistics before returning, so the next sample sees
/// every call.
pub async fn call(stack: &Stack, name: &str, times: usize) -> Result<()> {
    let pg = &stack.zone("dev").pg;
    // Before 15 there is no pg_stat_force_next_flush(): a session's counts
    // reach the statistics collector when it ends, and readers see them a
    // moment later.
    let collector = pg.server_major().await? < 15;
    let client = pg.connect().await?;
    let before = if collector {
        calls(&client, name).await?
    } else {
        0
    };
    let sql = format!("SELECT public.{name}(1)");
    for _ in 0..times {
        client.query(sql.as_str(), &[]).await?;
    }
    if !collector {
        client
            .query("SELECT pg_stat_force_next_flush()", &[])
            .await?;
        return Ok(());
    }
    drop(client);
    let wanted = before + i64::try_from(times)?;
    let reader = pg.connect().await?;
    let deadline = tokio::time::Instant::now() + EVENT;
    while calls(&reader, name).await? < wanted {
        if tokio::time::Instant::now() > deadline {
            bail!("{times} calls of {name} never reached pg_stat_user_functions");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// The calls of `public.<name>` counted so far, every overload together.
async fn calls(client: &pgrollout_tests::tokio_postgres::Client, name: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_user_functions \
             WHERE schemaname = 'public' AND funcname = $1",
            &[&name],
        )
        .await?
        .get(0))
}

/// `pgrollout alert create <name> dev --every 1s …`, from the project.
pub async fn create_watch(stack: &Stack, name: &str) -> Result<CommandOutput> {
    let project = stack.project.to_string_lossy().to_string();
    stack
        .cli(&[
            "alert",
            "create",
            name,
            "dev",
            "--every",
            "1s",
            "--for",
            "10m",
            "--min-increase",
            "10ms",
            "--project",
            &project,
        ])
        .await
}

/// The watch id `alert create` printed.
pub fn watch_id(out: &CommandOutput) -> Result<String> {
    out.stdout
        .split_whitespace()
        .find(|w| w.starts_with("w-"))
        .map(str::to_owned)
        .with_context(|| format!("no watch id in:\n{out}"))
}

/// A local webhook: every request's JSON body arrives on a channel.
pub struct Hook {
    pub url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
}

impl Hook {
    pub async fn start() -> Result<Hook> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let (sender, bodies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Ok(body) = read_body(&mut stream).await {
                        let _ = sender.send(body);
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Ok(Hook { url, bodies })
    }

    /// The next notification named `event` (others are skipped).
    pub async fn next(&mut self, event: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + EVENT;
        loop {
            let body = tokio::time::timeout_at(deadline, self.bodies.recv())
                .await
                .with_context(|| format!("no {event} notification within {EVENT:?}"))?
                .context("the hook stopped")?;
            if body["event"] == event {
                return Ok(body);
            }
        }
    }
}

pub async fn read_body(stream: &mut tokio::net::TcpStream) -> Result<Value> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            bail!("connection closed mid-request");
        }
        data.extend_from_slice(&buffer[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            return Ok(serde_json::from_slice(&data[end + 4..end + 4 + length])?);
        }
    }
}

/// One zone, `dev`, whose events go to `hook`, with `dev_extra` in its
/// environment table.
pub fn notifying(hook: &Hook, dev_extra: &str) -> StackOptions {
    StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), dev_extra.to_owned())],
        controller_extra: format!(
            "[notifications]\ntimeout = \"2s\"\nbackoff = \"200ms\"\n\
             [notifications.channels.ops-hook]\nkind = \"webhook\"\nurl = \"{}\"\n\
             [notifications.routes]\ndev = [\"ops-hook\"]\n",
            hook.url
        ),
        ..StackOptions::default()
    }
}

/// The controller's next `watch sampled` line for `watch` after `mark`:
/// its state, the calls counted since the baseline, and a mark after it.
pub async fn next_sample(
    controller: &Process,
    watch: &str,
    mut mark: OutputMark,
) -> Result<(String, u64, OutputMark)> {
    loop {
        // Every line about the watch carries its id; the log's colours sit
        // between field names and values, so those are read after removing them.
        let line = plain(&controller.wait_for_line_after(mark, watch, EVENT).await?);
        mark = controller.mark();
        if !line.contains("watch sampled") {
            continue;
        }
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .with_context(|| format!("no {name} in {line:?}"))
        };
        let calls = field("calls_since_baseline")?.parse()?;
        return Ok((field("state")?, calls, mark));
    }
}

/// `line` without ANSI colour sequences.
pub fn plain(line: &str) -> String {
    let mut text = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

/// Waits until a sample of `watch` counted at least `calls` calls since the
/// baseline, then for the sample after it (so the first one's verdict is
/// recorded, audited and announced); returns that first one's state.
pub async fn settled_after_calls(controller: &Process, watch: &str, calls: u64) -> Result<String> {
    let mut mark = controller.mark();
    loop {
        let (state, counted, after) = next_sample(controller, watch, mark).await?;
        mark = after;
        if counted >= calls {
            next_sample(controller, watch, mark).await?;
            return Ok(state);
        }
    }
}

pub async fn audit_actions(stack: &Stack) -> Result<Vec<(String, String)>> {
    let out = stack.cli(&["audit", "--output", "json"]).await?;
    anyhow::ensure!(out.code == 0, "{out}");
    Ok(serde_json::from_str::<Value>(&out.stdout)?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["details"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}
