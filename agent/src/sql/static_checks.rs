//! What the dry-run check and the test runners ask the catalog: whether an
//! extension is installed (and where), a routine's language and body, and
//! plpgsql_check's findings for one routine.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// The schema `extension` is installed in, as PostgreSQL quotes it (ready to
/// qualify a function name), or `None` when it is not installed.
pub async fn extension_schema(
    client: &Client,
    extension: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = $1",
            &[(&extension, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|row| row.get(0)))
}

/// A routine's language and body (`prosrc`) as the catalog holds them.
pub struct RoutineBody {
    pub language: String,
    pub source: String,
    /// Its oid: plpgsql_check is pointed at it by oid, since it runs with
    /// the routine's search path, under which a `regprocedure` text read
    /// with the agent's own path may not resolve.
    pub oid: u32,
}

/// The language and body of the routine `regprocedure` names, if it exists.
pub async fn routine_body(
    client: &Client,
    regprocedure: &str,
) -> Result<Option<RoutineBody>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT l.lanname::text, p.prosrc, p.oid FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
             WHERE p.oid = to_regprocedure($1)",
            &[(&regprocedure, Type::TEXT)],
        )
        .await?;
    Ok(rows.first().map(|row| RoutineBody {
        language: row.get(0),
        source: row.get(1),
        oid: row.get(2),
    }))
}

/// One row of `plpgsql_check_function_tb`.
pub struct PlpgsqlFinding {
    /// Line within the function body (line 1 is the text right after `$$`).
    pub lineno: Option<i32>,
    pub statement: Option<String>,
    pub sqlstate: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// error | warning | warning extra | performance | security …
    pub level: String,
}

/// Runs plpgsql_check on one routine, collecting every finding rather than
/// stopping at the first error. `extension_schema` comes quoted from
/// [`extension_schema`]; the routine is a bind parameter.
pub async fn plpgsql_check(
    client: &Client,
    extension_schema: &str,
    oid: u32,
) -> Result<Vec<PlpgsqlFinding>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT lineno, statement, sqlstate, message, detail, hint, level \
         FROM {extension_schema}.plpgsql_check_function_tb($1::regprocedure, fatal_errors => false)"
    );
    let rows = client.query_typed(&sql, &[(&oid, Type::OID)]).await?;
    Ok(rows
        .iter()
        .map(|row| PlpgsqlFinding {
            lineno: row.get(0),
            statement: row.get(1),
            sqlstate: row.get(2),
            message: row.get::<_, Option<String>>(3).unwrap_or_default(),
            detail: row.get(4),
            hint: row.get(5),
            level: row
                .get::<_, Option<String>>(6)
                .unwrap_or_else(|| "error".into()),
        })
        .collect())
}
