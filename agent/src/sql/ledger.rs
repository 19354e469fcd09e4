//! The ledger table in each target: created on first use, written in the same
//! transaction as the change, read to make a redelivered job a no-op.

use pgrollout_shared::audit_anchor::AuditHead;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::quote_identifier;
use super::snapshot::RoutineSnapshot;

/// Creates the ledger schema and table if they are missing, and brings a
/// ledger created by an older agent up to date (reversal columns, audit
/// anchors). Runs inside the deploy transaction, so a failed first deploy
/// leaves no trace either.
pub async fn ensure_ledger(client: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    // Check first: CREATE SCHEMA IF NOT EXISTS still demands CREATE on the
    // database, which a deploy role may rightly lack once the ledger exists;
    // and ALTER TABLE locks the ledger even when there is nothing to add. The
    // newest columns (one per upgrade) stand for every column it adds.
    // The schema alike: a DBA may have created it for a role that has no
    // CREATE on the database at all.
    let table = format!("{}.ledger", quote_identifier(schema));
    let row = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname IN ('audit_hash', 'source_sha256') \
             AND NOT attisdropped HAVING count(*) = 2), \
             EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $2)",
            &[(&table, Type::TEXT), (&schema, Type::TEXT)],
        )
        .await?;
    let (exists, current, schema_exists): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let quoted = quote_identifier(schema);
    let ddl = match (exists, current) {
        (true, true) => return Ok(()),
        // A new ledger is born in the qualified form, and says so.
        (false, _) => format!(
            "{}\n{}",
            include_str!("ledger_ddl.sql"),
            mark_qualified(&quoted)
        ),
        (true, false) => include_str!("ledger_upgrade.sql").to_owned(),
    };
    let ddl = ddl.replace("{schema}", &quoted);
    if schema_exists {
        client.batch_execute(&ddl).await
    } else {
        client
            .batch_execute(&format!("CREATE SCHEMA {quoted};\n{ddl}"))
            .await
    }
}

fn mark_qualified(quoted_schema: &str) -> String {
    format!("COMMENT ON COLUMN {quoted_schema}.ledger.identity IS '{IDENTITY_FORM}';")
}

/// Brings a ledger an older agent wrote to the qualified identities, in a
/// transaction of its own, before anything reads it (see
/// [`qualify_identities`]); once per target and agent process, on its first
/// connection: every job's reads and writes then match identities as
/// written. A ledger that is missing or already marked costs one query.
pub async fn qualify_legacy_identities(
    client: &Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    let table = format!("{}.ledger", quote_identifier(schema));
    let legacy: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL AND NOT EXISTS (SELECT FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = 'identity' \
             AND col_description(attrelid, attnum) = $2)",
            &[(&table, Type::TEXT), (&IDENTITY_FORM, Type::TEXT)],
        )
        .await?
        .get(0);
    if !legacy {
        return Ok(());
    }
    client.batch_execute("BEGIN").await?;
    let upgraded = async {
        // Serialises agents upgrading the same ledger at once; the second
        // finds nothing left to rewrite.
        client
            .batch_execute(&format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
            .await?;
        // A ledger old enough to lack `new_identity` gets its columns first.
        client
            .batch_execute(
                &include_str!("ledger_upgrade.sql").replace("{schema}", &quote_identifier(schema)),
            )
            .await?;
        qualify_identities(client, &table).await?;
        client
            .batch_execute(&mark_qualified(&quote_identifier(schema)))
            .await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    if upgraded.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    upgraded
}

/// How the ledger names routines: `regprocedure` text written under the
/// agent's own search path (`pg_catalog, pg_temp`), so every schema but
/// pg_catalog's is named. Kept as the comment of the identity column.
const IDENTITY_FORM: &str =
    "pgrollout: regprocedure text, schema-qualified (search_path pg_catalog)";

/// Rewrites the identities an older agent recorded with `public` on its
/// search path (`f(integer)`, `g(mytype)`) into the qualified form, once:
/// each is resolved as that agent resolved it and written out again; one
/// that no longer resolves (a dropped routine) gets `public.` in front of an
/// unqualified name. Resolving reads the text only, and runs nothing a
/// schema could shadow (`to_regprocedure(text)` matches pg_catalog's exactly).
async fn qualify_identities(client: &Client, table: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("SET LOCAL search_path TO public")
        .await?;
    let resolved = client
        .query_typed(
            &format!(
                "SELECT i, to_regprocedure(i)::oid FROM (SELECT identity FROM {table} \
                 UNION SELECT new_identity FROM {table} WHERE new_identity IS NOT NULL) AS x(i)"
            ),
            &[],
        )
        .await;
    client
        .batch_execute("SET LOCAL search_path TO DEFAULT")
        .await?;
    let resolved = resolved?;
    let old: Vec<String> = resolved.iter().map(|r| r.get(0)).collect();
    let oids: Vec<Option<u32>> = resolved.iter().map(|r| r.get(1)).collect();
    // One column at a time: a statement must not update a row twice.
    for column in ["identity", "new_identity"] {
        client
            .execute_typed(
                &format!(
                    "WITH m AS (SELECT u.old, CASE \
                       WHEN u.o IS NOT NULL THEN u.o::pg_catalog.regprocedure::pg_catalog.text \
                       WHEN pg_catalog.cardinality(pg_catalog.parse_ident(u.old, false)) = 1 \
                         THEN 'public.' OPERATOR(pg_catalog.||) u.old \
                       ELSE u.old END AS new \
                     FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                                     pg_catalog.unnest($2::pg_catalog.oid[])) AS u(old, o)) \
                     UPDATE {table} l SET {column} = m.new FROM m \
                     WHERE l.{column} = m.old AND m.new <> m.old"
                ),
                &[(&old, Type::TEXT_ARRAY), (&oids, Type::OID_ARRAY)],
            )
            .await?;
    }
    Ok(())
}

/// The audit anchor's two query parameters (NULL when the job carried none).
pub fn anchor_params(head: Option<&AuditHead>) -> (Option<i64>, Option<String>) {
    (head.map(|h| h.seq), head.map(|h| h.hash.clone()))
}

/// Ledger ids already recorded for this job, empty when it never applied.
/// A missing ledger table means nothing was ever applied here.
pub async fn find_job_in_ledger(
    client: &Client,
    schema: &str,
    job_id: &str,
) -> Result<Vec<(i64, String, String)>, tokio_postgres::Error> {
    if !ledger_exists(client, schema).await? {
        return Ok(Vec::new());
    }
    let table = format!("{}.ledger", quote_identifier(schema));
    let rows = client
        .query_typed(
            &format!(
                "SELECT id, identity, coalesce(new_sha256, '') FROM {table} WHERE job_id = $1 ORDER BY id"
            ),
            &[(&job_id, Type::TEXT)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
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

/// What one ledger row records about one routine, for every kind of job.
pub struct LedgerRow<'a> {
    pub identity: &'a str,
    /// created | replaced | recreated | unchanged | retired (a deploy);
    /// restored | dropped | unchanged | renamed | revoked | renamed-back |
    /// re-granted (a reversal)
    pub change: &'a str,
    /// The plan and commit of the version now in place, when known.
    pub plan_id: &'a str,
    pub commit_sha: Option<&'a str>,
    pub previous: &'a RoutineSnapshot,
    pub new: &'a RoutineSnapshot,
    /// SHA-256 of what the plan asked for (`unchanged::source_sha256`).
    pub source_sha256: Option<String>,
    /// Whether the job's backup holds this routine (false: left untouched).
    pub backed_up: bool,
    /// The row this one reverses (rollback, disable, enable).
    pub undoes_ledger_id: Option<i64>,
    pub new_identity: Option<&'a str>,
    pub note: Option<&'a str>,
}

/// Context shared by every row of one job.
pub struct LedgerJob<'a> {
    pub job_id: &'a str,
    pub attempt: i32,
    pub rollout_id: &'a str,
    /// deploy | rollback | auto-rollback | disable | enable
    pub action: &'a str,
    pub actor: &'a str,
    pub trace_id: &'a str,
    /// The backup this job took before it changed anything.
    pub backup_path: &'a str,
    pub backup_sha256: &'a str,
    /// The controller's audit head the job carried: recorded as an anchor.
    pub audit_head: Option<&'a AuditHead>,
}

/// The parameters `$1`-`$10` of both ledger inserts: the job's own columns
/// and its audit anchor (`anchor`, from [`anchor_params`]).
pub(super) fn job_params<'a>(
    job: &'a LedgerJob<'_>,
    anchor: &'a (Option<i64>, Option<String>),
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    vec![
        (&job.job_id, Type::TEXT),
        (&job.attempt, Type::INT4),
        (&job.rollout_id, Type::TEXT),
        (&job.action, Type::TEXT),
        (&job.actor, Type::TEXT),
        (&job.trace_id, Type::TEXT),
        (&job.backup_path, Type::TEXT),
        (&job.backup_sha256, Type::TEXT),
        (&anchor.0, Type::INT8),
        (&anchor.1, Type::TEXT),
    ]
}

/// Inserts every row of a job in one statement; returns each new row's id
/// with its identity (unique per job), in the order of `rows`.
pub async fn insert_ledger_rows(
    client: &Client,
    schema: &str,
    job: &LedgerJob<'_>,
    rows: &[LedgerRow<'_>],
) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    let text = |f: &dyn Fn(&LedgerRow<'_>) -> Option<String>| -> Vec<Option<String>> {
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
        text(&|r| r.source_sha256.clone()),
    ];
    let backed_up: Vec<bool> = rows.iter().map(|r| r.backed_up).collect();
    let undoes: Vec<Option<i64>> = rows.iter().map(|r| r.undoes_ledger_id).collect();
    let new_identity = text(&|r| r.new_identity.map(str::to_owned));
    let note = text(&|r| r.note.map(str::to_owned));
    let anchor = anchor_params(job.audit_head);
    let mut params = job_params(job, &anchor);
    params.extend(
        columns
            .iter()
            .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY)),
    );
    params.push((&backed_up, Type::BOOL_ARRAY));
    params.push((&undoes, Type::INT8_ARRAY));
    params.push((&new_identity, Type::TEXT_ARRAY));
    params.push((&note, Type::TEXT_ARRAY));
    let sql = include_str!("ledger_insert.sql").replace("{schema}", &quote_identifier(schema));
    let inserted = client.query_typed(&sql, &params).await?;
    Ok(inserted
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
