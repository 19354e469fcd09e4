//! What the ledger last recorded about each routine: the state a deploy left
//! and the plan source it came from. Read before a deploy changes anything, so
//! an unchanged routine can be left untouched.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::quote_identifier;

/// The `new` side of a routine's latest ledger row, and its source hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatestRecorded {
    pub source_sha256: Option<String>,
    pub definition_sha256: Option<String>,
    pub owner: Option<String>,
    pub acl: Option<String>,
    pub comment: Option<String>,
}

/// The latest row of each identity (`None` entries, and identities the
/// ledger never saw, give `None`), in the order given; all `None` when the
/// ledger does not exist yet.
pub async fn latest_recorded(
    client: &Client,
    schema: &str,
    identities: &[Option<String>],
) -> Result<Vec<Option<LatestRecorded>>, tokio_postgres::Error> {
    // Nothing exists yet (a first deploy): no ledger row can match.
    if identities.iter().all(Option::is_none) {
        return Ok(vec![None; identities.len()]);
    }
    let table = format!("{}.ledger", quote_identifier(schema));
    let exists: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table, Type::TEXT)],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(vec![None; identities.len()]);
    }
    let sql = include_str!("ledger_latest.sql").replace("{schema}", &quote_identifier(schema));
    let rows = client
        .query_typed(&sql, &[(&identities, Type::TEXT_ARRAY)])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let recorded = LatestRecorded {
                source_sha256: row.get(0),
                definition_sha256: row.get(1),
                owner: row.get(2),
                acl: row.get(3),
                comment: row.get(4),
            };
            (recorded != LatestRecorded::default()).then_some(recorded)
        })
        .collect())
}
