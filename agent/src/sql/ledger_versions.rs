//! Reading the ledger as a version history, and recording the changes that
//! reverse others (rollback, auto-rollback, disable, enable).
//!
//! Deploys write the ledger through `ledger.rs`; everything here either reads
//! it or writes rows that point back at the row they reverse
//! (`undoes_ledger_id`), which is what lets a second rollback go one version
//! further back instead of undoing the first.

use pgrollout_shared::operations::RoutineSelector;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::ledger::{anchor_params, ensure_ledger};
use super::quote_identifier;
use super::snapshot::RoutineSnapshot;
use pgrollout_shared::audit_anchor::AuditHead;

/// One ledger row with both sides of its change.
#[derive(Clone, Debug)]
pub struct LedgerRecord {
    pub id: i64,
    pub applied_at_ms: i64,
    pub job_id: String,
    pub rollout_id: String,
    pub plan_id: String,
    /// deploy | auto-rollback | rollback | disable | enable
    pub action: String,
    /// `regprocedure` text when the row was written.
    pub identity: String,
    pub change: String,
    /// The state before the change (`existed` false: the routine was absent).
    pub previous: RoutineSnapshot,
    pub previous_sha256: Option<String>,
    /// The state after the change.
    pub new: RoutineSnapshot,
    pub new_sha256: Option<String>,
    pub actor: String,
    pub trace_id: Option<String>,
    pub commit_sha: Option<String>,
    pub backup_path: Option<String>,
    pub backup_sha256: Option<String>,
    pub undoes_ledger_id: Option<i64>,
    pub new_identity: Option<String>,
    pub note: Option<String>,
}

impl LedgerRecord {
    /// Whether the row changed nothing at all: a redeploy of the same text
    /// with the same grants. Such rows are not versions to roll back.
    pub fn is_no_op(&self) -> bool {
        self.previous_sha256 == self.new_sha256
            && self.previous.owner == self.new.owner
            && self.previous.acl == self.new.acl
            && self.previous.comment == self.new.comment
            && self.new_identity.is_none()
    }
}

/// Rows of the routines a selector names (by name, optionally schema and
/// argument types, matched on the ledger's `regprocedure` identities).
const BY_SELECTOR: &str = "(SELECT p.part[cardinality(p.part)] = $2 \
       AND ($1 = '' OR (cardinality(p.part) = 2 AND p.part[1] = $1) \
            OR (cardinality(p.part) = 1 AND $1 = ANY (current_schemas(true)))) \
       AND ($3::text IS NULL OR right(l.identity, length($3) + 2) = '(' || $3 || ')') \
     FROM (SELECT parse_ident(l.identity, false) AS part) p)";
/// Every row of the routines one rollout deployed.
const BY_ROLLOUT: &str = "l.identity IN (SELECT d.identity FROM {schema}.ledger d \
     WHERE d.rollout_id = $1 AND d.action = 'deploy')";
/// Every row of the routine one ledger row is about.
const BY_ROW: &str = "l.identity = (SELECT r.identity FROM {schema}.ledger r WHERE r.id = $1)";

/// The ledger rows of every routine `selector` names, oldest first; empty
/// when the ledger does not exist yet.
pub async fn rows_for_selector(
    client: &Client,
    schema: &str,
    selector: &RoutineSelector,
) -> Result<Vec<LedgerRecord>, tokio_postgres::Error> {
    let schema_filter = selector.schema.clone().unwrap_or_default();
    let args = selector.regprocedure_args();
    read(
        client,
        schema,
        BY_SELECTOR,
        &[
            (&schema_filter, Type::TEXT),
            (&selector.name, Type::TEXT),
            (&args, Type::TEXT),
        ],
    )
    .await
}

/// The whole history of these routines (`regprocedure` texts), oldest first.
pub async fn rows_for_identities(
    client: &Client,
    schema: &str,
    identities: &[String],
) -> Result<Vec<LedgerRecord>, tokio_postgres::Error> {
    read(
        client,
        schema,
        "l.identity = ANY ($1::text[])",
        &[(&identities, Type::TEXT_ARRAY)],
    )
    .await
}

/// The whole history of every routine the rollout deployed, oldest first.
pub async fn rows_for_rollout(
    client: &Client,
    schema: &str,
    rollout_id: &str,
) -> Result<Vec<LedgerRecord>, tokio_postgres::Error> {
    read(client, schema, BY_ROLLOUT, &[(&rollout_id, Type::TEXT)]).await
}

/// The whole history of the routine ledger row `id` is about.
pub async fn rows_for_routine_of(
    client: &Client,
    schema: &str,
    id: i64,
) -> Result<Vec<LedgerRecord>, tokio_postgres::Error> {
    read(client, schema, BY_ROW, &[(&id, Type::INT8)]).await
}

async fn read(
    client: &Client,
    schema: &str,
    filter: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<LedgerRecord>, tokio_postgres::Error> {
    if !ledger_exists(client, schema).await? {
        return Ok(Vec::new());
    }
    let sql = include_str!("ledger_rows.sql")
        .replace("{filter}", filter)
        .replace("{schema}", &quote_identifier(schema));
    let rows = client.query_typed(&sql, params).await?;
    Ok(rows.iter().map(record).collect())
}

fn record(row: &Row) -> LedgerRecord {
    let identity: String = row.get("identity");
    let side = |prefix: &str| {
        let definition: Option<String> = row.get(format!("{prefix}_definition").as_str());
        RoutineSnapshot {
            requested: identity.clone(),
            existed: definition.is_some(),
            identity: definition.as_ref().map(|_| identity.clone()),
            schema: None,
            definition,
            owner: row.get(format!("{prefix}_owner").as_str()),
            acl: row.get(format!("{prefix}_acl").as_str()),
            comment: row.get(format!("{prefix}_comment").as_str()),
        }
    };
    LedgerRecord {
        id: row.get("id"),
        applied_at_ms: row.get("applied_at_ms"),
        job_id: row.get("job_id"),
        rollout_id: row.get("rollout_id"),
        plan_id: row.get("plan_id"),
        action: row.get("action"),
        change: row.get("change"),
        previous: side("previous"),
        previous_sha256: row.get("previous_sha256"),
        new: side("new"),
        new_sha256: row.get("new_sha256"),
        actor: row.get("actor"),
        trace_id: row.get("trace_id"),
        commit_sha: row.get("commit_sha"),
        backup_path: row.get("backup_path"),
        backup_sha256: row.get("backup_sha256"),
        undoes_ledger_id: row.get("undoes_ledger_id"),
        new_identity: row.get("new_identity"),
        note: row.get("note"),
        identity,
    }
}

async fn ledger_exists(client: &Client, schema: &str) -> Result<bool, tokio_postgres::Error> {
    let table = format!("{}.ledger", quote_identifier(schema));
    Ok(client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table, Type::TEXT)],
        )
        .await?
        .get(0))
}

/// Creates the ledger if it is missing, or brings an older one up to date
/// (`ensure_ledger` does both). Runs inside the caller's transaction.
pub async fn ensure_reversal_columns(
    client: &Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    ensure_ledger(client, schema).await
}

/// What one reversal row records about one routine.
pub struct ReversalRow<'a> {
    pub identity: &'a str,
    /// restored | dropped | unchanged | renamed | revoked | renamed-back | re-granted
    pub change: &'a str,
    /// The plan and commit of the version now in place, when known.
    pub plan_id: &'a str,
    pub commit_sha: Option<&'a str>,
    pub previous: &'a RoutineSnapshot,
    pub new: &'a RoutineSnapshot,
    pub undoes_ledger_id: Option<i64>,
    pub new_identity: Option<&'a str>,
    pub note: Option<&'a str>,
}

/// Context shared by every row of one reversing job.
pub struct ReversalJob<'a> {
    pub job_id: &'a str,
    pub attempt: i32,
    pub rollout_id: &'a str,
    /// rollback | auto-rollback | disable | enable
    pub action: &'a str,
    pub actor: &'a str,
    pub trace_id: &'a str,
    /// The backup this job took before it changed anything.
    pub backup_path: &'a str,
    pub backup_sha256: &'a str,
    /// The controller's audit head the job carried: recorded as an anchor.
    pub audit_head: Option<&'a AuditHead>,
}

/// Inserts every row of a reversing job in one statement; returns each new
/// row's id with its identity (unique per job).
pub async fn insert_reversal_rows(
    client: &Client,
    schema: &str,
    job: &ReversalJob<'_>,
    rows: &[ReversalRow<'_>],
) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    let text = |f: &dyn Fn(&ReversalRow<'_>) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(f).collect()
    };
    let columns: Vec<Vec<Option<String>>> = vec![
        text(&|r| Some(r.plan_id.to_owned())),
        text(&|r| r.commit_sha.map(str::to_owned)),
        text(&|r| Some(r.identity.to_owned())),
        text(&|r| Some(r.change.to_owned())),
        text(&|r| r.previous.definition.clone()),
        text(&|r| r.previous.owner.clone()),
        text(&|r| r.previous.acl.clone()),
        text(&|r| r.previous.comment.clone()),
        text(&|r| r.previous.definition_sha256()),
        text(&|r| r.new.definition.clone()),
        text(&|r| r.new.owner.clone()),
        text(&|r| r.new.acl.clone()),
        text(&|r| r.new.comment.clone()),
        text(&|r| r.new.definition_sha256()),
    ];
    let undoes: Vec<Option<i64>> = rows.iter().map(|r| r.undoes_ledger_id).collect();
    let new_identity = text(&|r| r.new_identity.map(str::to_owned));
    let note = text(&|r| r.note.map(str::to_owned));
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&job.job_id, Type::TEXT),
        (&job.attempt, Type::INT4),
        (&job.rollout_id, Type::TEXT),
        (&job.action, Type::TEXT),
        (&job.actor, Type::TEXT),
        (&job.trace_id, Type::TEXT),
        (&job.backup_path, Type::TEXT),
        (&job.backup_sha256, Type::TEXT),
    ];
    params.extend(
        columns
            .iter()
            .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY)),
    );
    params.push((&undoes, Type::INT8_ARRAY));
    params.push((&new_identity, Type::TEXT_ARRAY));
    params.push((&note, Type::TEXT_ARRAY));
    let (audit_seq, audit_hash) = anchor_params(job.audit_head);
    params.push((&audit_seq, Type::INT8));
    params.push((&audit_hash, Type::TEXT));
    let sql =
        include_str!("ledger_reversal_insert.sql").replace("{schema}", &quote_identifier(schema));
    let inserted = client.query_typed(&sql, &params).await?;
    Ok(inserted
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
