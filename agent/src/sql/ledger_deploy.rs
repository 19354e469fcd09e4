//! A deploy's ledger rows (a deploy, a retire, an all-unchanged redeploy):
//! one statement that reads each changed routine's new side from the
//! catalog as it records it (`ledger_insert_deploy.sql`). The agent sends
//! only what the catalog no longer has — the state before the job — and
//! gets back each row's id, its change and both definitions' SHA-256.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::ledger::{anchor_params, job_params, LedgerJob};
use super::quote_identifier;
use super::snapshot::RoutineSnapshot;

/// What became of one routine of a deploy, as the agent knows it before
/// the ledger reads the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployedKind {
    /// Dropped by the job (`retire`): the row names what it was.
    Retired,
    /// Its live state already was the plan's: not touched, no backup entry.
    Untouched,
    /// Dropped and created again (a change CREATE OR REPLACE cannot make).
    Recreated,
    /// Created or replaced; the statement tells created / unchanged /
    /// replaced from both sides.
    Live,
}

impl DeployedKind {
    fn as_sql(self) -> &'static str {
        match self {
            DeployedKind::Retired => "retired",
            DeployedKind::Untouched => "untouched",
            DeployedKind::Recreated => "recreated",
            DeployedKind::Live => "live",
        }
    }
}

/// One routine of a deploy, for its ledger row.
pub struct DeployedRow<'a> {
    pub kind: DeployedKind,
    /// Its oid after the CREATEs, when known; else its signature, resolved
    /// by `to_regprocedure` (only a live routine's is ever needed).
    pub oid: Option<u32>,
    pub signature: Option<String>,
    /// Its state before the job.
    pub previous: &'a RoutineSnapshot,
    /// SHA-256 of what the plan asked for (none for a retired routine).
    pub source_sha256: Option<String>,
}

/// What the ledger recorded for one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRow {
    pub id: i64,
    /// created | replaced | recreated | unchanged | retired
    pub change: String,
    /// Empty when there is no such side (a created routine has no previous).
    pub new_sha256: String,
    pub previous_sha256: String,
}

/// Inserts every row of a deploy in one statement, reading the new side
/// from the catalog; the recorded rows in the order of `rows`.
pub async fn insert_deploy_rows(
    client: &Client,
    schema: &str,
    job: &LedgerJob<'_>,
    plan_id: &str,
    commit_sha: &str,
    rows: &[DeployedRow<'_>],
) -> Result<Vec<RecordedRow>, tokio_postgres::Error> {
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_sql()).collect();
    let oids: Vec<Option<u32>> = rows.iter().map(|r| r.oid).collect();
    let signatures: Vec<Option<&str>> = rows.iter().map(|r| r.signature.as_deref()).collect();
    let previous = |f: fn(&RoutineSnapshot) -> Option<&str>| -> Vec<Option<&str>> {
        rows.iter().map(|r| f(r.previous)).collect()
    };
    let identities = previous(|s| s.identity.as_deref());
    let definitions = previous(|s| s.definition.as_deref());
    let owners = previous(|s| s.owner.as_deref());
    let acls = previous(|s| s.acl.as_deref());
    let comments = previous(|s| s.comment.as_deref());
    let sources: Vec<Option<&str>> = rows.iter().map(|r| r.source_sha256.as_deref()).collect();
    let anchor = anchor_params(job.audit_head);
    let mut params = job_params(job, &anchor);
    params.extend([
        (&plan_id as &(dyn ToSql + Sync), Type::TEXT),
        (&commit_sha, Type::TEXT),
        (&kinds, Type::TEXT_ARRAY),
        (&oids, Type::OID_ARRAY),
        (&signatures, Type::TEXT_ARRAY),
        (&identities, Type::TEXT_ARRAY),
        (&definitions, Type::TEXT_ARRAY),
        (&owners, Type::TEXT_ARRAY),
        (&acls, Type::TEXT_ARRAY),
        (&comments, Type::TEXT_ARRAY),
        (&sources, Type::TEXT_ARRAY),
    ]);
    let sql =
        include_str!("ledger_insert_deploy.sql").replace("{schema}", &quote_identifier(schema));
    let inserted = client.query_typed(&sql, &params).await?;
    Ok(inserted
        .iter()
        .map(|row| RecordedRow {
            id: row.get(0),
            change: row.get(1),
            new_sha256: row.get(2),
            previous_sha256: row.get(3),
        })
        .collect())
}
