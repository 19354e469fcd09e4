//! One-line summaries of test reports, shared by the agent (step messages),
//! the controller (gate reasons) and the CLI, so all three say the same.

use crate::proto::{CheckFinding, PerfReport, PgtapReport};

/// `procedures/f.sql:12 public.f(integer): error 42P01: relation "nope" does
/// not exist (detail …)` — file and line first, as compilers print them.
pub fn finding_line(finding: &CheckFinding) -> String {
    let place = match (finding.line, finding.statement_line) {
        (0, 0) => finding.source_path.clone(),
        (0, line) => format!("{} (line {line} of its statement)", finding.source_path),
        (line, _) => format!("{}:{line}", finding.source_path),
    };
    let code = if finding.sqlstate.is_empty() {
        String::new()
    } else {
        format!(" {}", finding.sqlstate)
    };
    let detail = if finding.detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", finding.detail)
    };
    format!(
        "{place} {}: {}{code}: {}{detail} [{}]",
        finding.routine, finding.level, finding.message, finding.source
    )
}

/// `public.f(): old median 20.104 ms, new median 40.212 ms (200%)`; a probe
/// that failed, or that the target's performance gate will refuse, says so.
pub fn perf_line(report: &PerfReport) -> String {
    let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
    let line = if !report.error.is_empty() {
        format!("{}: not measured: {}", report.routine, report.error)
    } else if !report.has_baseline {
        let what = if report.target_environment.is_empty() {
            "new routine, no baseline".to_owned()
        } else if report.baseline_sha256.is_empty() {
            format!("new in {}, no baseline", report.target_environment)
        } else {
            format!(
                "no baseline: the controller holds no definition of the version {} runs",
                report.target_environment
            )
        };
        format!(
            "{}: {what}; new median {} ({})",
            report.routine,
            ms(report.new_median_us),
            runs(report.runs)
        )
    } else {
        format!(
            "{}: old median {} ({}), new median {} ({}%, {} each)",
            report.routine,
            ms(report.old_median_us),
            report.baseline,
            ms(report.new_median_us),
            perf_percent(report),
            runs(report.runs)
        )
    };
    match perf_refusal(report) {
        Some(refusal) => format!("{line} — {refusal}"),
        None => line,
    }
}

/// The new median in percent of the old one (rounded down).
pub fn perf_percent(report: &PerfReport) -> u64 {
    (report.new_median_us * 100)
        .checked_div(report.old_median_us.max(1))
        .unwrap_or(0)
}

/// What the target environment's performance gate will do with this probe,
/// when it will refuse it: a failed probe, or a new median over its limit.
pub fn perf_refusal(report: &PerfReport) -> Option<String> {
    let target = report.target_environment.as_str();
    let gate = if target.is_empty() {
        "the performance gate of the environments promoted from here".to_owned()
    } else {
        format!("{target}'s performance gate")
    };
    if !report.error.is_empty() {
        return Some(format!("{gate} will refuse this plan: the probe failed"));
    }
    let over = report.has_baseline
        && report.threshold_percent > 0
        && u128::from(report.new_median_us) * 100
            > u128::from(report.old_median_us) * u128::from(report.threshold_percent);
    over.then(|| {
        format!(
            "over {target}'s {}% limit: {gate} will refuse this plan",
            report.threshold_percent
        )
    })
}

/// `1 run`, `7 runs`.
pub fn runs(count: u32) -> String {
    if count == 1 {
        "1 run".to_owned()
    } else {
        format!("{count} runs")
    }
}

/// `3 of 3 passed`, `1 of 3 failed: not ok 2 - …`, `skipped: …`.
pub fn pgtap_summary(report: &PgtapReport) -> String {
    if !report.skipped.is_empty() {
        return format!("skipped: {}", report.skipped);
    }
    let mut text = if report.passed {
        format!("{} of {} passed", report.run, report.run)
    } else {
        format!("{} of {} failed", report.failed, report.run)
    };
    if report.planned != 0 && report.planned != report.run {
        text.push_str(&format!(
            " (planned {}, ran {})",
            report.planned, report.run
        ));
    }
    if !report.error.is_empty() {
        text.push_str(&format!("; error: {}", report.error));
    }
    if !report.failures.is_empty() {
        text.push_str(&format!(": {}", report.failures.join(" | ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_starts_with_its_file_and_line() {
        let mut finding = CheckFinding {
            routine: "public.f(integer)".into(),
            source_path: "procedures/f.sql".into(),
            line: 12,
            statement_line: 9,
            level: "error".into(),
            sqlstate: "42P01".into(),
            message: "relation \"nope\" does not exist".into(),
            detail: String::new(),
            source: "plpgsql_check".into(),
        };
        assert_eq!(
            finding_line(&finding),
            "procedures/f.sql:12 public.f(integer): error 42P01: relation \"nope\" does not exist [plpgsql_check]"
        );
        finding.line = 0;
        assert!(finding_line(&finding).starts_with("procedures/f.sql (line 9 of its statement) "));
    }

    #[test]
    fn summaries_read_as_one_line() {
        let mut report = PgtapReport {
            path: "tests/a.sql".into(),
            passed: true,
            planned: 2,
            run: 2,
            ..Default::default()
        };
        assert_eq!(pgtap_summary(&report), "2 of 2 passed");
        report.passed = false;
        report.failed = 1;
        report.failures = vec!["not ok 2 - adds".into()];
        assert_eq!(pgtap_summary(&report), "1 of 2 failed: not ok 2 - adds");
        report.planned = 3;
        assert_eq!(
            pgtap_summary(&report),
            "1 of 2 failed (planned 3, ran 2): not ok 2 - adds"
        );
    }
}
