//! The drift scan's one catalog query (issue 20): what the ledger last
//! recorded of each routine beside what the catalog holds now, and the
//! routines of the managed schemas the ledger never saw. Reads only: a
//! ledger that does not exist yet gives no rows, one without the
//! `new_identity` column is read as if no routine had been renamed.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::quote_identifier;

/// One side of a comparison: a routine's definition, owner, ACL and comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutineState {
    pub definition: Option<String>,
    pub owner: Option<String>,
    /// `proacl::text`; `None` is the default privileges.
    pub acl: Option<String>,
    pub comment: Option<String>,
}

/// A routine as the scan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRoutine {
    /// The ledger knows it (else it is a routine of a managed schema the
    /// ledger never saw).
    pub ledgered: bool,
    /// `regprocedure` text: the ledger's for a ledgered routine.
    pub identity: String,
    pub schema: String,
    pub name: String,
    /// What the ledger last recorded; `None` when it expects no routine.
    pub expected: Option<RoutineState>,
    /// What the catalog holds; `None` when no routine has the identity.
    pub live: Option<RoutineState>,
}

/// The scan's rows (ledgered first, by identity) and the managed schemas.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub routines: Vec<ScannedRoutine>,
    pub managed_schemas: Vec<String>,
}

/// Runs the scan against the ledger in `schema`.
pub async fn drift_scan(client: &Client, schema: &str) -> Result<Scan, tokio_postgres::Error> {
    let table = format!("{}.ledger", quote_identifier(schema));
    let row = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = 'new_identity' AND NOT attisdropped)",
            &[(&table, Type::TEXT)],
        )
        .await?;
    let (exists, has_new_identity): (bool, bool) = (row.get(0), row.get(1));
    if !exists {
        return Ok(Scan::default());
    }
    let sql = include_str!("drift_scan.sql")
        .replace("{schema}", &quote_identifier(schema))
        .replace(
            "{new_identity}",
            if has_new_identity {
                "l.new_identity"
            } else {
                "NULL::text"
            },
        );
    let rows = client.query_typed(&sql, &[(&schema, Type::TEXT)]).await?;
    let mut scan = Scan::default();
    for row in &rows {
        if scan.managed_schemas.is_empty() {
            scan.managed_schemas = row
                .get::<_, Option<Vec<String>>>("managed_schemas")
                .unwrap_or_default();
        }
        let expected_exists: bool = row.get("expected_exists");
        let live_exists: bool = row.get("live_exists");
        scan.routines.push(ScannedRoutine {
            ledgered: row.get("ledgered"),
            identity: row.get("identity"),
            schema: row.get("schema"),
            name: row.get("name"),
            expected: expected_exists.then(|| RoutineState {
                definition: row.get("new_definition"),
                owner: row.get("new_owner"),
                acl: row.get("new_acl"),
                comment: row.get("new_comment"),
            }),
            live: live_exists.then(|| RoutineState {
                definition: row.get("live_definition"),
                owner: row.get("live_owner"),
                acl: row.get("live_acl"),
                comment: row.get("live_comment"),
            }),
        });
    }
    Ok(scan)
}
