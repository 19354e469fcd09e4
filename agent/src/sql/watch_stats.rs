//! What a post-deploy watch reads: `track_functions` and the call statistics
//! of the watched routines (`pg_stat_user_functions`).

use pgrollout_shared::proto::FunctionStats;
use pgrollout_shared::watch::WatchedName;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// `none`, `pl` or `all`, as this session sees it: the server's setting with
/// the database's and the role's overrides applied.
pub async fn track_functions(client: &Client) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT current_setting('track_functions')", &[])
        .await?;
    row.try_get(0)
}

/// Every routine of `names` that exists now, ordered by identity, with its
/// counters when PostgreSQL has any.
pub async fn function_stats(
    client: &Client,
    names: &[WatchedName],
) -> Result<Vec<FunctionStats>, tokio_postgres::Error> {
    let schemas: Vec<&str> = names.iter().map(|n| n.schema.as_str()).collect();
    let routines: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
    let rows = client
        .query_typed(
            include_str!("watch_stats.sql"),
            &[(&schemas, Type::TEXT_ARRAY), (&routines, Type::TEXT_ARRAY)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let calls: Option<i64> = row.try_get("calls")?;
            Ok(FunctionStats {
                identity: row.try_get("identity")?,
                oid: row.try_get("oid")?,
                language: row.try_get("language")?,
                has_stats: calls.is_some(),
                calls: calls.unwrap_or(0),
                total_time_ms: row.try_get::<_, Option<f64>>("total_time")?.unwrap_or(0.0),
                self_time_ms: row.try_get::<_, Option<f64>>("self_time")?.unwrap_or(0.0),
            })
        })
        .collect()
}
