//! What a job's result reports beyond its job, sequence and outcome, in the
//! controller's terms: the operator's text, the backup file, the target's
//! ledger rows, the versions it applied or restored, and its performance
//! probes. Converted once, where the result arrives
//! (`ReportedResult::try_from`); the audit, the after-deploy bookkeeping and
//! the store's history index read these, never the wire's `JobResult`.
//!
//! Not converted, on purpose: the result as a whole is kept as the agent
//! wrote it (`ReportedResult::wire`) because it is only stored as the job's
//! blob and relayed to the operator's stream and a waiting watch sample,
//! whose readers decode it themselves (the CLI, `engine/watch/sample.rs`).

use pgrollout_shared::proto;

/// The job's report, checked and typed where the controller reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultPayload {
    /// What the agent says happened, for the rollout's record and the audit.
    pub message: String,
    /// The backup file the job wrote (or a replay found), when there is one.
    pub backup: Option<BackupFile>,
    /// The target's ledger rows the job wrote (or a replay found).
    pub ledger_ids: Vec<i64>,
    /// Each routine a deploy applied, in deploy order.
    pub applied: Vec<AppliedVersion>,
    /// Each routine a rollback, disable or enable restored.
    pub restored: Vec<RestoredVersion>,
    /// The performance probes run after a deploy (or as their own job).
    pub perf: Vec<PerfProbe>,
}

/// A backup file on the agent's host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFile {
    pub path: String,
    /// Of the file's content; empty when the agent did not say.
    pub sha256: String,
}

/// A version a deploy made live (or found already live).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedVersion {
    /// The plan's identity, e.g. `public.f(integer)`.
    pub identity: String,
    /// SHA-256 of the definition now live, as the ledger records it.
    pub new_sha256: String,
}

impl AppliedVersion {
    /// A definition digest the version index can key on (a full SHA-256).
    pub fn has_digest(&self) -> bool {
        self.new_sha256.len() == 64
    }
}

/// A version a rollback, disable or enable put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredVersion {
    /// PostgreSQL's `regprocedure` text of the routine.
    pub identity: String,
    pub sha256: String,
}

/// One performance probe's measurement, as the `performance` gate reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfProbe {
    pub routine: String,
    pub call_sql: String,
    pub runs: u32,
    /// The old definition's median, when there was a baseline to measure.
    pub old_median_us: Option<u64>,
    pub new_median_us: u64,
    /// Where the baseline came from (the ledger, the backup, …).
    pub baseline: String,
    /// The environment whose limit the probe was measured against.
    pub target_environment: String,
    pub baseline_sha256: String,
    /// Why the probe could not measure; empty when it did.
    pub error: String,
}

/// Every field the controller reads, taken from the wire once. Infallible:
/// each of these is meaningful at any value the wire can hold (an empty
/// backup path is "no backup").
impl From<&proto::JobResult> for ResultPayload {
    fn from(result: &proto::JobResult) -> Self {
        let backup = (!result.backup_path.is_empty()).then(|| BackupFile {
            path: result.backup_path.clone(),
            sha256: result.backup_sha256.clone(),
        });
        ResultPayload {
            message: result.message.clone(),
            backup,
            ledger_ids: result.ledger_ids.clone(),
            applied: result
                .applied
                .iter()
                .map(|a| AppliedVersion {
                    identity: a.identity.clone(),
                    new_sha256: a.new_sha256.clone(),
                })
                .collect(),
            restored: result
                .restored
                .iter()
                .map(|r| RestoredVersion {
                    identity: r.identity.clone(),
                    sha256: r.sha256.clone(),
                })
                .collect(),
            perf: result.perf.iter().map(PerfProbe::from).collect(),
        }
    }
}

impl From<&proto::PerfReport> for PerfProbe {
    fn from(report: &proto::PerfReport) -> Self {
        PerfProbe {
            routine: report.routine.clone(),
            call_sql: report.call_sql.clone(),
            runs: report.runs,
            old_median_us: (report.has_baseline && report.error.is_empty())
                .then_some(report.old_median_us),
            new_median_us: report.new_median_us,
            baseline: report.baseline.clone(),
            target_environment: report.target_environment.clone(),
            baseline_sha256: report.baseline_sha256.clone(),
            error: report.error.clone(),
        }
    }
}
