//! The statement of `pgrollout retire` beyond the deploy path's own (the
//! DROP is `recreate::drop_for_recreate`'s, refused when `pg_depend` shows
//! dependants): the reason written into the job's ledger rows.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::quote_identifier;

/// Records why each routine was retired in its ledger row (`ids[i]` gets
/// `notes[i]`), in one statement.
pub async fn note_rows(
    client: &Client,
    schema: &str,
    ids: &[i64],
    notes: &[String],
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "UPDATE {}.ledger AS l SET note = n.note \
         FROM unnest($1::bigint[], $2::text[]) AS n(id, note) WHERE l.id = n.id",
        quote_identifier(schema)
    );
    client
        .execute_typed(
            &sql,
            &[(&ids, Type::INT8_ARRAY), (&notes, Type::TEXT_ARRAY)],
        )
        .await
        .map(|_| ())
}
