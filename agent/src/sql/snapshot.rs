//! Reading routines' complete current state from the catalog, all at once.

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::sha256_hex;

/// One routine as the catalog holds it right now (or its absence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutineSnapshot {
    /// The signature that was looked up, as the plan wrote it.
    pub requested: String,
    pub existed: bool,
    /// `oid::regprocedure` text: PostgreSQL's canonical identity.
    pub identity: Option<String>,
    pub schema: Option<String>,
    /// `pg_get_functiondef`: body, SECURITY DEFINER, search_path, volatility…
    pub definition: Option<String>,
    pub owner: Option<String>,
    pub acl: Option<String>,
    pub comment: Option<String>,
}

impl RoutineSnapshot {
    /// Fingerprint of the definition, `None` when the routine did not exist.
    pub fn definition_sha256(&self) -> Option<String> {
        self.definition.as_deref().map(sha256_hex)
    }

    /// `f(integer)` owned by `app` with `definition`, or absent: the
    /// reversal tests' routine.
    #[cfg(test)]
    pub fn of_f(definition: Option<&str>) -> Self {
        RoutineSnapshot {
            requested: "f(integer)".into(),
            existed: definition.is_some(),
            identity: definition.map(|_| "f(integer)".into()),
            schema: None,
            definition: definition.map(str::to_owned),
            owner: Some("app".into()),
            acl: None,
            comment: None,
        }
    }
}

/// Snapshots every signature in one catalog query.
pub async fn snapshot_routines(
    client: &Client,
    signatures: &[String],
) -> Result<Vec<RoutineSnapshot>, tokio_postgres::Error> {
    snapshot_routines_at(client, signatures, &[]).await
}

/// [`snapshot_routines`] of routines whose oids are known (the first
/// `oids.len()` of them): looked up by oid, without resolving the signature
/// text again. With every oid known, `signatures` may be empty.
pub async fn snapshot_routines_at(
    client: &Client,
    signatures: &[String],
    oids: &[u32],
) -> Result<Vec<RoutineSnapshot>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            include_str!("catalog_snapshot.sql"),
            &[(&signatures, Type::TEXT_ARRAY), (&oids, Type::OID_ARRAY)],
        )
        .await?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let identity: Option<String> = row.get("identity");
            RoutineSnapshot {
                // Looked up by oid alone, a routine is asked for by what the
                // catalog calls it.
                requested: signatures
                    .get(index)
                    .cloned()
                    .or_else(|| identity.clone())
                    .unwrap_or_default(),
                existed: row.get("existed"),
                identity,
                schema: row.get("schema"),
                definition: row.get("definition"),
                owner: row.get("owner"),
                acl: row.get("acl"),
                comment: row.get("comment"),
            }
        })
        .collect())
}
