//! Reading the ledger as a version history, and recording the changes that
//! reverse others (rollback, auto-rollback, disable, enable).
//!
//! Every job writes the ledger through `ledger.rs`'s one insert; a reversal's
//! rows point back at the row they reverse (`undoes_ledger_id`), which is what
//! lets a second rollback go one version further back instead of undoing the
//! first.

use pgrollout_shared::operations::RoutineSelector;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::ledger::ensure_ledger;
use super::quote_identifier;
use super::snapshot::RoutineSnapshot;

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
/// argument types, matched on the ledger's `regprocedure` identities). An
/// unqualified identity is `public`'s: written by an older agent, still
/// running beside this one, after this agent's first connection rewrote the
/// ledger (`ledger::qualify_legacy_identities`).
const BY_SELECTOR: &str = "(SELECT p.part[cardinality(p.part)] = $2 \
       AND ($1 = '' OR (cardinality(p.part) = 2 AND p.part[1] = $1) \
            OR (cardinality(p.part) = 1 AND $1 = 'public')) \
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
    // As `regprocedure` text writes them (`text,integer`).
    let args = super::signatures::selector_arg_types(client, selector)
        .await?
        .map(|types| types.join(","));
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
