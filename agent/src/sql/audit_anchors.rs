//! Reading the audit anchors a target's ledger holds (issue 13): the
//! controller's audit head as each changing job carried it.

use pgrollout_shared::proto::{AuditAnchor, AuditHead};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::quote_identifier;

/// Every distinct anchor, oldest first; none when the ledger or its anchor
/// columns do not exist yet. Reads only: never upgrades the ledger.
pub async fn audit_anchors(
    client: &Client,
    schema: &str,
) -> Result<Vec<AuditAnchor>, tokio_postgres::Error> {
    let table = format!("{}.ledger", quote_identifier(schema));
    let has_anchors: bool = client
        .query_typed_one(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname = 'audit_hash' AND NOT attisdropped)",
            &[(&table, Type::TEXT)],
        )
        .await?
        .get(0);
    if !has_anchors {
        return Ok(Vec::new());
    }
    let sql = include_str!("audit_anchors.sql").replace("{schema}", &quote_identifier(schema));
    let rows = client.query_typed(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| AuditAnchor {
            head: Some(AuditHead {
                seq: row.get(0),
                hash: row.get(1),
            }),
            ledger_id: row.get(2),
            applied_at_unix_ms: row.get(3),
        })
        .collect())
}
