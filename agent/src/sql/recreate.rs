//! Changes `CREATE OR REPLACE` cannot make — another return type, OUT
//! parameters, renamed arguments, removed defaults — made as DROP + CREATE
//! in the caller's transaction (issue 15). PostgreSQL decides which changes
//! those are (SQLSTATE 42P13 on the CREATE OR REPLACE); the agent does not
//! guess. Whatever depends on the routine (views, `BEGIN ATOMIC` functions,
//! triggers, column defaults) would be dropped or block the DROP, so it is
//! looked up in `pg_depend` first and the change refused, naming each one.

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::exact_restore::{create_routine, drop_routine};

/// Whether PostgreSQL refused a CREATE OR REPLACE because the change needs a
/// new routine.
pub fn needs_drop_and_create(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::INVALID_FUNCTION_DEFINITION)
}

#[derive(Debug, thiserror::Error)]
pub enum RecreateError {
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Dependants(Dependants),
}

/// Routines that need DROP + CREATE and what depends on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependants(pub Vec<(String, Vec<String>)>);

impl std::fmt::Display for Dependants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let each: Vec<String> = self
            .0
            .iter()
            .map(|(identity, on)| format!("{identity} is used by {}", on.join(", ")))
            .collect();
        write!(
            f,
            "{}: PostgreSQL cannot CREATE OR REPLACE this change (return type, OUT parameters, argument names or \
             defaults), and DROP + CREATE would break what depends on it; change or drop those in a reviewed \
             migration first — nothing was changed",
            each.join("; ")
        )
    }
}

/// What depends on each routine (`regprocedure` texts); only routines with
/// dependants are listed.
pub async fn dependants(
    client: &Client,
    identities: &[String],
) -> Result<Dependants, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            include_str!("dependants.sql"),
            &[(&identities, Type::TEXT_ARRAY)],
        )
        .await?;
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let identity: String = row.get(0);
        let dependant: Option<String> = row.get(1);
        let Some(dependant) = dependant else { continue };
        match found.last_mut() {
            Some((last, on)) if *last == identity => on.push(dependant),
            _ => found.push((identity, vec![dependant])),
        }
    }
    Ok(Dependants(found))
}

/// Drops these routines (`regprocedure` texts) unless something depends on
/// them, in which case nothing is dropped and the dependants are named.
pub async fn drop_for_recreate(
    client: &Client,
    identities: &[String],
) -> Result<(), RecreateError> {
    let found = dependants(client, identities).await?;
    if !found.0.is_empty() {
        return Err(RecreateError::Dependants(found));
    }
    for identity in identities {
        drop_routine(client, identity).await?;
    }
    Ok(())
}

/// Runs `statement` (a CREATE OR REPLACE of the routine `existing` names, if
/// it exists); when PostgreSQL refuses to replace it, drops and creates it
/// instead. Returns whether it did. The first attempt runs in a savepoint, so
/// a refusal leaves the transaction usable. Owner, ACL and comment are the
/// caller's to set afterwards.
pub async fn create_or_recreate(
    client: &Client,
    statement: &str,
    search_path: &[String],
    existing: Option<&str>,
) -> Result<bool, RecreateError> {
    let Some(existing) = existing else {
        create_routine(client, statement, search_path).await?;
        return Ok(false);
    };
    client.batch_execute("SAVEPOINT pgrollout_replace").await?;
    match create_routine(client, statement, search_path).await {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT pgrollout_replace")
                .await?;
            Ok(false)
        }
        Err(error) if needs_drop_and_create(&error) => {
            client
                .batch_execute(
                    "ROLLBACK TO SAVEPOINT pgrollout_replace; RELEASE SAVEPOINT pgrollout_replace",
                )
                .await?;
            drop_for_recreate(client, &[existing.to_owned()]).await?;
            create_routine(client, statement, search_path).await?;
            Ok(true)
        }
        Err(error) => Err(error.into()),
    }
}
