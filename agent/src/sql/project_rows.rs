//! Reading what project SQL returns — smoke calls, `[perf]` probe calls,
//! pgTAP statements — without trusting its size. Those statements are
//! hostile input: `SELECT repeat('x', 10^8) FROM generate_series(1, 100)`
//! answers with 10 GB, and collecting it the usual way (`Client::query`)
//! would take the zone's agent down with its memory. Rows are streamed and
//! dropped as they come; the server's answer reaches the agent no faster
//! than it reads (the driver's channel is bounded), and the call's own
//! statement timeout bounds how long it sends.

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Error, SimpleQueryMessage, ToStatement};

/// How much text a pgTAP script may print before the agent stops reading:
/// far more than any test report, far less than an agent's memory.
pub const MAX_TEXT_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

fn no_params() -> std::iter::Empty<&'static (dyn ToSql + Sync)> {
    std::iter::empty()
}

/// Runs `statement` and counts the rows it returns, keeping none of them.
pub async fn count_rows<T>(client: &Client, statement: &T) -> Result<u64, Error>
where
    T: ?Sized + ToStatement,
{
    let rows = client.query_raw(statement, no_params()).await?;
    pin_mut!(rows);
    let mut count = 0;
    while rows.try_next().await?.is_some() {
        count += 1;
    }
    Ok(count)
}

/// Sends `message` as one simple query (the agent's own statements ahead of
/// one project statement) and counts the rows it returns, keeping none of
/// them: only the project statement returns rows. Also says how many of the
/// message's statements completed, so an error can be told apart: one of
/// the agent's (fewer completed than it sent) or the project statement's.
pub async fn count_rows_of_message(client: &Client, message: &str) -> (usize, Result<u64, Error>) {
    let mut completed = 0;
    let mut rows = 0;
    let answer = async {
        let messages = client.simple_query_raw(message).await?;
        pin_mut!(messages);
        while let Some(message) = messages.try_next().await? {
            match message {
                SimpleQueryMessage::Row(_) => rows += 1,
                SimpleQueryMessage::CommandComplete(_) => completed += 1,
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    (completed, answer.map(|()| rows))
}

/// The first column of each row of `statement`, where it is text (pgTAP's
/// output), up to `max_bytes` in all. `Ok(Err(kept))`: there was more; the
/// rest was not read (the caller rolls the transaction back).
pub async fn text_lines(
    client: &Client,
    statement: &str,
    max_bytes: usize,
) -> Result<Result<Vec<String>, Vec<String>>, Error> {
    let rows = client.query_raw(statement, no_params()).await?;
    pin_mut!(rows);
    let mut lines = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.try_next().await? {
        let is_text = row
            .columns()
            .first()
            .is_some_and(|c| *c.type_() == Type::TEXT);
        if !is_text {
            continue;
        }
        if let Some(line) = row.get::<_, Option<String>>(0) {
            bytes = bytes.saturating_add(line.len());
            if bytes > max_bytes {
                return Ok(Err(lines));
            }
            lines.push(line);
        }
    }
    Ok(Ok(lines))
}
