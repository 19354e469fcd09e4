//! `pgrollout drift <environment> [procedure…]` (issue 20): what changed
//! behind pgrollout's back. The zone's agent compares the live catalog with
//! the ledger; this prints its findings — each routine changed by hand with
//! unified diffs of its definition and ACL items, dropped, renamed, or never
//! deployed by pgrollout — and exits 4 when there is any (0 when none).

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{DriftFinding, DriftRequest, DriftResponse};

use super::connect;
use super::output::{self, OutputFlag};

#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 no drift · 4 drift found · 1 refused (unknown environment, \
                        bad name, role) · 2 the scan failed (no agent, database error)."
)]
pub struct DriftArgs {
    /// The environment whose target to scan.
    environment: String,
    /// Limit the report to these routines (`name` or `schema.name`); all when omitted.
    procedures: Vec<String>,
    /// Show the controller's last recorded scan of these routines; contact no agent.
    #[arg(long)]
    cached: bool,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn run(address: &str, tls: &connect::OperatorTls, args: DriftArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let request = DriftRequest {
        environment: args.environment.clone(),
        procedures: args.procedures.clone(),
        cached: args.cached,
    };
    let response = match client.drift(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    // Identities, diffs and comments come from the database: data.
    let response = pgrollout_shared::text::escaped(response, "pgrollout.v1.DriftResponse");
    let report = response.report.clone().unwrap_or_default();
    if args.output.json() {
        output::print(&json(&response));
    } else {
        print!("{}", text(&response));
    }
    if report.findings.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::DriftFound
    }
}

fn json(response: &DriftResponse) -> serde_json::Value {
    let report = response.report.clone().unwrap_or_default();
    serde_json::json!({
        "environment": response.environment,
        "zone": response.zone,
        "target": response.target,
        "agent": response.agent,
        "cached": response.cached,
        "scanned_at_unix_ms": response.scanned_at_unix_ms,
        "new_drift": response.new_drift,
        "routines_checked": report.routines_checked,
        "scan_ms": report.scan_ms,
        "managed_schemas": report.managed_schemas,
        "drift": !report.findings.is_empty(),
        "findings": report.findings.iter().map(|f| serde_json::json!({
            "identity": f.identity,
            "kind": f.kind,
            "aspects": f.aspects,
            "details": f.details,
            "renamed_to": (!f.renamed_to.is_empty()).then_some(&f.renamed_to),
            "definition_diff": (!f.definition_diff.is_empty()).then_some(&f.definition_diff),
            "acl_diff": (!f.acl_diff.is_empty()).then_some(&f.acl_diff),
        })).collect::<Vec<_>>(),
    })
}

/// The report for people: a summary line, then each finding with its diffs.
pub fn text(response: &DriftResponse) -> String {
    let report = response.report.clone().unwrap_or_default();
    let mut out = String::new();
    let mut place = format!(
        "{} (zone {}, target {}, agent {})",
        response.environment, response.zone, response.target, response.agent
    );
    if response.cached {
        let age_s = (now_unix_ms() - response.scanned_at_unix_ms).max(0) / 1000;
        place.push_str(&format!(
            " — cached scan from {age_s}s ago, the agent was not asked"
        ));
    }
    if report.findings.is_empty() {
        out.push_str(&format!(
            "no drift in {place}: {} routine(s) are as the ledger recorded them\n",
            report.routines_checked
        ));
        return out;
    }
    out.push_str(&format!(
        "DRIFT in {place}: {} finding(s), {} routine(s) checked, managed schemas: {}\n",
        report.findings.len(),
        report.routines_checked,
        report.managed_schemas.join(", ")
    ));
    if !response.new_drift.is_empty() {
        out.push_str(&format!(
            "new since the previous scan: {}\n",
            response.new_drift.join(", ")
        ));
    }
    for finding in &report.findings {
        out.push_str(&finding_text(finding));
    }
    out
}

fn finding_text(finding: &DriftFinding) -> String {
    let mut out = match finding.kind.as_str() {
        "changed" => format!(
            "\nchanged by hand: {} ({})\n",
            finding.identity,
            finding.aspects.join(", ")
        ),
        "dropped" => format!(
            "\ndropped: {} (the ledger expects it; no routine has this identity)\n",
            finding.identity
        ),
        "renamed" => format!(
            "\nrenamed: {} -> {}\n",
            finding.identity, finding.renamed_to
        ),
        "unmanaged" => format!(
            "\nnot deployed by pgrollout: {} (in a managed schema)\n",
            finding.identity
        ),
        other => format!("\n{other}: {}\n", finding.identity),
    };
    for detail in &finding.details {
        out.push_str(&format!("  {detail}\n"));
    }
    for (what, diff) in [
        ("definition", &finding.definition_diff),
        ("ACL items", &finding.acl_diff),
    ] {
        if !diff.is_empty() {
            out.push_str(&format!("  {what}:\n"));
            for line in diff.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}
