//! This process's resource use, read from Linux's `/proc/self` for the
//! standard `process_*` metrics. Hand-written because `prometheus-client`
//! has no process collector and the few fields needed do not justify
//! `procfs` (and its `rustix` tree) in both binaries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What could be read; `None` where `/proc` did not say.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: the kernel reports
/// them in USER_HZ, which is 100 on every architecture Linux supports
/// today (reading `sysconf(_SC_CLK_TCK)` would need `unsafe` libc calls,
/// which the workspace forbids).
const USER_HZ: f64 = 100.0;

pub fn read() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let stat = stat.as_deref().and_then(stat_fields);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| boot_time(&text));
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        // Less the descriptor read_dir itself holds open.
        .map(|entries| entries.count().saturating_sub(1) as f64);
    ProcessStats {
        cpu_seconds: stat.as_ref().and_then(|f| {
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / USER_HZ)
        }),
        resident_bytes: status_kib(&status, "VmRSS:").map(|kib| kib * 1024.0),
        virtual_bytes: status_kib(&status, "VmSize:").map(|kib| kib * 1024.0),
        open_fds,
        max_fds: max_open_files(&limits),
        start_time_seconds: stat.as_ref().and_then(|f| {
            let ticks = f.get(19)?.parse::<u64>().ok()?;
            Some(boot_time? + ticks as f64 / USER_HZ)
        }),
    }
}

/// The fields after the command name, which is in parentheses and may hold
/// spaces: index 0 is the state (field 3 in proc(5)), 11 utime, 12 stime,
/// 19 starttime.
fn stat_fields(text: &str) -> Option<Vec<String>> {
    let after_name = &text[text.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// A `Key:  1234 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn boot_time(text: &str) -> Option<f64> {
    let line = text.lines().find(|line| line.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// Seconds since the epoch now, for comparisons in tests and callers.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_formats() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 1000 200";
        let fields = stat_fields(stat).expect("fields");
        assert_eq!((fields[0].as_str(), fields[11].as_str()), ("S", "250"));
        assert_eq!(fields[19], "12345");
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t   2048 kB\n", "VmRSS:"),
            Some(2048.0)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[test]
    fn this_process_is_measured_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let stats = read();
        assert!(
            stats.resident_bytes.is_some_and(|b| b > 1_000_000.0),
            "{stats:?}"
        );
        assert!(stats.open_fds.is_some_and(|n| n >= 3.0), "{stats:?}");
        assert!(stats.cpu_seconds.is_some(), "{stats:?}");
        let started = stats.start_time_seconds.expect("start time");
        assert!(started <= now_seconds() + 1.0 && started > now_seconds() - 86_400.0 * 365.0);
    }
}
