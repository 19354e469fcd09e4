//! The store's load as an operator would read it: the CPU of PostgreSQL's
//! processes (postmaster and every backend, from /proc), committed
//! transactions per second and connections (`pg_stat_database`,
//! `pg_stat_activity`), WAL bytes per second, beside the controllers' CPU and the load average.
//!
//! `xact_commit` is flushed by each backend at most once a second (up to
//! 10 s when it goes idle), so rates are taken over windows of 15 s or more.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::PgCluster;

pub struct Sample {
    at: Instant,
    /// PostgreSQL's CPU so far: postmaster, reaped and live backends.
    pg_ticks: u64,
    commits: i64,
    connections: i64,
    /// Bytes of WAL written so far (no flush lag, unlike the counters).
    wal: i64,
    /// (pid, CPU ticks) of each controller process alive at the sample.
    controllers: Vec<(u32, u64)>,
}

/// What happened between two samples.
pub struct Window {
    seconds: f64,
    pg_cpu: f64,
    commits_per_second: f64,
    wal_per_second: f64,
    connections: i64,
    controllers_cpu: f64,
    load_average: String,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store: PostgreSQL CPU {:.1}% of a core, {:.1} commits/s, WAL {:.1} KiB/s, {} connections; controllers' CPU {:.1}% of a core (sum); over {:.1} s; load average {}",
            self.pg_cpu * 100.0,
            self.commits_per_second,
            self.wal_per_second / 1024.0,
            self.connections,
            self.controllers_cpu * 100.0,
            self.seconds,
            self.load_average
        )
    }
}

impl Sample {
    /// The window from this sample to `later`, counting the controllers in
    /// `pids` that were alive at both.
    pub fn until(&self, later: &Sample, pids: &[u32]) -> Window {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(0.001);
        let ticks = ticks_per_second();
        let controller_ticks: u64 = pids
            .iter()
            .filter_map(|pid| {
                let before = self.controllers.iter().find(|(p, _)| p == pid)?.1;
                let after = later.controllers.iter().find(|(p, _)| p == pid)?.1;
                Some(after.saturating_sub(before))
            })
            .sum();
        Window {
            seconds,
            pg_cpu: later.pg_ticks.saturating_sub(self.pg_ticks) as f64 / ticks / seconds,
            commits_per_second: (later.commits - self.commits) as f64 / seconds,
            wal_per_second: (later.wal - self.wal) as f64 / seconds,
            connections: later.connections,
            controllers_cpu: controller_ticks as f64 / ticks / seconds,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

/// The store's postmaster, from its `postmaster.pid`.
pub fn postmaster_pid(store: &PgCluster) -> Result<u32> {
    let file = store.data_dir().join("postmaster.pid");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(text
        .lines()
        .next()
        .context("empty postmaster.pid")?
        .trim()
        .parse()?)
}

pub async fn sample_store(monitor: &Client, postmaster: u32, pids: &[u32]) -> Result<Sample> {
    let row = monitor
        .query_one(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
                    (SELECT count(*) FROM pg_stat_activity \
                      WHERE datname = current_database() AND pid <> pg_backend_pid()), \
                    (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
            &[],
        )
        .await?;
    Ok(Sample {
        at: Instant::now(),
        pg_ticks: postgres_ticks(postmaster)?,
        commits: row.get(0),
        connections: row.get(1),
        wal: row.get(2),
        controllers: pids
            .iter()
            .filter_map(|pid| Some((*pid, stat(*pid)?.own)))
            .collect(),
    })
}

/// Samples, waits `window`, samples again.
pub async fn measure_window(
    monitor: &Client,
    postmaster: u32,
    pids: &[u32],
    window: Duration,
) -> Result<Window> {
    let before = sample_store(monitor, postmaster, pids).await?;
    tokio::time::sleep(window).await;
    let after = sample_store(monitor, postmaster, pids).await?;
    Ok(before.until(&after, pids))
}

struct Stat {
    parent: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: children it reaped.
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = text.rsplit_once(") ")?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        parent: number(1)? as u32,
        own: number(11)? + number(12)?,
        reaped: number(13)? + number(14)?,
    })
}

/// The postmaster's CPU, its reaped children's, and its live children's.
fn postgres_ticks(postmaster: u32) -> Result<u64> {
    let main = stat(postmaster).context("the store's postmaster is gone")?;
    let mut total = main.own + main.reaped;
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(child) = stat(pid).filter(|s| s.parent == postmaster) {
            total += child.own;
        }
    }
    Ok(total)
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
