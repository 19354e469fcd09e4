//! The markers beside what the CLI prints (issue 16): emoji on a terminal,
//! plain ASCII (`[ok]`, `[FAIL]` …) when stdout is a pipe or a file, when
//! `NO_COLOR` is set or when `TERM=dumb` — scripts and logs get text they can
//! grep, whatever the locale.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// What a marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Ok,
    Fail,
    Skipped,
    Undone,
    Waiting,
    Unknown,
    Closed,
    /// Known in part: e.g. post-commit smoke tests an agent restart cut short.
    Incomplete,
}

/// Whether stdout gets emoji; decided once per process.
pub fn fancy() -> bool {
    static FANCY: OnceLock<bool> = OnceLock::new();
    *FANCY
        .get_or_init(|| pgrollout_shared::log_format::decorations(std::io::stdout().is_terminal()))
}

/// The marker for `mark` on this process's stdout.
pub fn mark(mark: Mark) -> &'static str {
    marker(mark, fancy())
}

/// `⚠ warning:` on a terminal, `warning:` otherwise.
pub fn warning_prefix() -> &'static str {
    if fancy() {
        "⚠ warning:"
    } else {
        "warning:"
    }
}

fn marker(mark: Mark, fancy: bool) -> &'static str {
    match (mark, fancy) {
        (Mark::Ok, true) => "✅",
        (Mark::Ok, false) => "[ok]",
        (Mark::Fail, true) => "❌",
        (Mark::Fail, false) => "[FAIL]",
        (Mark::Skipped, true) => "➖",
        (Mark::Skipped, false) => "[-]",
        (Mark::Undone, true) => "↩️",
        (Mark::Undone, false) => "[undone]",
        (Mark::Waiting, true) => "⏳",
        (Mark::Waiting, false) => "[wait]",
        (Mark::Unknown, true) => "❓",
        (Mark::Unknown, false) => "[?]",
        (Mark::Closed, true) => "🕒",
        (Mark::Closed, false) => "[closed]",
        (Mark::Incomplete, true) => "⚠️",
        (Mark::Incomplete, false) => "[incomplete]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_markers_are_ascii() {
        for m in [
            Mark::Ok,
            Mark::Fail,
            Mark::Skipped,
            Mark::Undone,
            Mark::Waiting,
            Mark::Unknown,
            Mark::Closed,
            Mark::Incomplete,
        ] {
            assert!(marker(m, false).is_ascii(), "{m:?}");
            assert!(!marker(m, true).is_ascii(), "{m:?}");
        }
    }
}
