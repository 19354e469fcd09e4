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

/// Keeps the rest of the current transaction's calls out of
/// `pg_stat_user_functions` (`SET LOCAL track_functions = 'none'`), so that
/// pgrollout's own calls — smoke tests, probes — never count in a watch's
/// mean time per call. Only a role that may set it can (superuser, or
/// `GRANT SET ON PARAMETER`): `Ok(false)` when it may not, and the
/// transaction goes on unharmed (the attempt runs in a savepoint).
pub async fn stop_counting_calls(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let set = client
        .batch_execute(
            "SAVEPOINT pgrollout_uncounted; SET LOCAL track_functions = 'none'; \
             RELEASE SAVEPOINT pgrollout_uncounted",
        )
        .await;
    match set {
        Ok(()) => Ok(true),
        Err(error) if error.as_db_error().is_some() => {
            client
                .batch_execute(
                    "ROLLBACK TO SAVEPOINT pgrollout_uncounted; RELEASE SAVEPOINT pgrollout_uncounted",
                )
                .await?;
            Ok(false)
        }
        Err(error) => Err(error),
    }
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
