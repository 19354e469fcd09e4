//! Finding routines in the catalog by name, as an operator names them, for
//! the jobs that act on whatever exists now (disable) rather than on what a
//! plan or the ledger lists.

use pgrollout_shared::operations::RoutineSelector;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// One routine of the name, as the catalog has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedRoutine {
    /// `regprocedure` text, quoted by PostgreSQL.
    pub identity: String,
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

/// Every routine `selector` names, outside the system schemas and the
/// ledger's own schema, ordered by identity.
pub async fn routines_named(
    client: &Client,
    selector: &RoutineSelector,
    ledger_schema: &str,
) -> Result<Vec<NamedRoutine>, tokio_postgres::Error> {
    let schema = selector.schema.clone().unwrap_or_default();
    // oidvectortypes() separates the types with ", ".
    let args = super::signatures::selector_arg_types(client, selector)
        .await?
        .map(|types| types.join(", "));
    let rows = client
        .query_typed(
            include_str!("routines_named.sql"),
            &[
                (&schema, Type::TEXT),
                (&selector.name, Type::TEXT),
                (&args, Type::TEXT),
                (&ledger_schema, Type::TEXT),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| NamedRoutine {
            identity: row.get("identity"),
            oid: row.get("oid"),
            schema: row.get("schema"),
            name: row.get("name"),
        })
        .collect())
}

/// The current `regprocedure` text of routines by oid (a rename changes the
/// text, never the oid); `None` for one that no longer exists.
pub async fn identities_of(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT p.oid::regprocedure::text FROM unnest($1::oid[]) WITH ORDINALITY AS u(o, n) \
             LEFT JOIN pg_proc p ON p.oid = u.o ORDER BY u.n",
            &[(&oids, Type::OID_ARRAY)],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The bare routine name inside a `regprocedure` text, unquoted.
pub async fn name_of_identity(
    client: &Client,
    identity: &str,
) -> Result<String, tokio_postgres::Error> {
    Ok(client
        .query_typed_one(
            "SELECT p[cardinality(p)] FROM parse_ident($1, false) AS p",
            &[(&identity, Type::TEXT)],
        )
        .await?
        .get(0))
}
