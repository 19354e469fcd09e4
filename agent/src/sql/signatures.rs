//! The text `to_regprocedure` reads for a plan's routine, under the agent's
//! own search path (`pg_catalog, pg_temp`).
//!
//! A plan names each routine's argument types as its source writes them:
//! `rate(m mood)` for a `public.mood`, `f(version_info)` for a type of a
//! schema on the project's declared path. PostgreSQL resolved those names
//! with the routine's path when it ran the CREATE; the agent's own path does
//! not hold them, so each such type is resolved once with the routine's path
//! and written back as `format_type` spells it under the agent's
//! (`public.mood`). Builtins and qualified names resolve as written and cost
//! one query for the whole job; the rest one more per distinct path, and one
//! to spell them. Every query here names pg_catalog's functions: the routine's
//! path may hold a schema another role creates in.
//!
//! Results are kept on the connection, so each job resolves its routines once.

use std::collections::{BTreeSet, HashMap};

use pgrollout_shared::operations::RoutineSelector;
use pgrollout_shared::routine::{
    quote_identifier, set_local_search_path_sql, Routine, RoutineIdentity, CODE_DEFAULT_SEARCH_PATH,
};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::TargetConnection;

/// The lookup text of each routine, in order.
pub async fn signatures_of(
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let wanted: Vec<(&RoutineIdentity, &[String])> = routines
        .iter()
        .map(|r| (&r.identity, r.search_path.as_slice()))
        .collect();
    signatures_for(conn, &wanted).await
}

/// The lookup text of each identity, whose types were written for the path
/// beside it, in order.
pub async fn signatures_for(
    conn: &TargetConnection,
    wanted: &[(&RoutineIdentity, &[String])],
) -> Result<Vec<String>, tokio_postgres::Error> {
    resolve_missing(conn, wanted).await?;
    let known = conn.signatures();
    Ok(wanted
        .iter()
        .map(|(identity, _)| signature_of_known(&known, identity))
        .collect())
}

/// The lookup text of one identity this connection resolved before (as part
/// of a job's routines), else the identity as written.
pub fn signature_of(conn: &TargetConnection, identity: &RoutineIdentity) -> String {
    signature_of_known(&conn.signatures(), identity)
}

fn signature_of_known(
    known: &HashMap<RoutineIdentity, String>,
    identity: &RoutineIdentity,
) -> String {
    known
        .get(identity)
        .cloned()
        .unwrap_or_else(|| identity.regprocedure_input())
}

async fn resolve_missing(
    conn: &TargetConnection,
    wanted: &[(&RoutineIdentity, &[String])],
) -> Result<(), tokio_postgres::Error> {
    let missing: Vec<(&RoutineIdentity, &[String])> = {
        let known = conn.signatures();
        wanted
            .iter()
            .filter(|(identity, _)| !known.contains_key(*identity))
            .copied()
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let written: BTreeSet<&str> = missing
        .iter()
        .flat_map(|(identity, _)| identity.arg_types.iter().map(String::as_str))
        .collect();
    let written: Vec<&str> = written.into_iter().collect();
    // Which types the agent's own path already resolves as written.
    let found = type_oids(&conn.client, &written).await?;
    let as_written: BTreeSet<&str> = written
        .iter()
        .zip(&found)
        .filter(|(_, found)| found.is_some())
        .map(|(t, _)| *t)
        .collect();
    // The others, with each routine's path: (path, type) → oid.
    let mut by_path: HashMap<&[String], BTreeSet<&str>> = HashMap::new();
    for (identity, path) in &missing {
        for t in &identity.arg_types {
            if !as_written.contains(t.as_str()) {
                by_path.entry(path).or_default().insert(t);
            }
        }
    }
    let mut resolved: HashMap<(&[String], &str), u32> = HashMap::new();
    for (path, types) in &by_path {
        let (columns, types): (Vec<&str>, Vec<&str>) =
            types.iter().partition(|t| column_reference(t).is_some());
        let oids = type_oids_in_path(&conn.client, path, &types).await?;
        let column_oids = column_type_oids(&conn.client, path, &columns).await?;
        for (t, oid) in types
            .iter()
            .zip(oids)
            .chain(columns.iter().zip(column_oids))
        {
            if let Some(oid) = oid {
                resolved.insert((path, t), oid);
            }
        }
    }
    let spelled = spell(&conn.client, resolved.values().copied().collect()).await?;
    let mut known = conn.signatures();
    for (identity, path) in missing {
        let args: Vec<String> = identity
            .arg_types
            .iter()
            .map(|t| {
                resolved
                    .get(&(path, t.as_str()))
                    .and_then(|oid| spelled.get(oid))
                    .cloned()
                    .unwrap_or_else(|| match column_reference(t) {
                        // No such relation or column here: a lookup of it
                        // says `type "items.id%TYPE" does not exist`, not a
                        // syntax error at `%`.
                        Some(_) => quote_identifier(t),
                        None => t.clone(),
                    })
            })
            .collect();
        let signature = format!(
            "{}.{}({})",
            quote_identifier(&identity.schema),
            quote_identifier(&identity.name),
            args.join(", ")
        );
        known.insert(identity.clone(), signature);
    }
    Ok(())
}

/// Each type's oid under the agent's own path (`None`: not found there, or
/// a column's type — `to_regtype` cannot read `%TYPE`; see
/// [`column_type_oids`]).
async fn type_oids(
    client: &Client,
    types: &[&str],
) -> Result<Vec<Option<u32>>, tokio_postgres::Error> {
    let plain: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| column_reference(t).is_none())
        .collect();
    let mut found = catalog_oids(client, Lookup::Type, &plain)
        .await?
        .into_iter();
    Ok(types
        .iter()
        .map(|t| match column_reference(t) {
            Some(_) => None,
            None => found.next().flatten(),
        })
        .collect())
}

/// What [`catalog_oids`] looks names up as.
#[derive(Clone, Copy)]
enum Lookup {
    Type,
    Relation,
}

/// `to_regtype` or `to_regclass` of each name under the session's path, as
/// oids (`None`: not found), in order. Every function named in pg_catalog.
async fn catalog_oids(
    client: &Client,
    lookup: Lookup,
    names: &[&str],
) -> Result<Vec<Option<u32>>, tokio_postgres::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let sql = match lookup {
        Lookup::Type => {
            "SELECT pg_catalog.to_regtype(u.t)::pg_catalog.oid \
             FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(t, n) ORDER BY u.n"
        }
        Lookup::Relation => {
            "SELECT pg_catalog.to_regclass(u.t)::pg_catalog.oid \
             FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(t, n) ORDER BY u.n"
        }
    };
    Ok(client
        .query_typed(sql, &[(&names, Type::TEXT_ARRAY)])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// [`type_oids`] as `path` resolves them (`None`: no such type; the CREATE
/// will say so).
async fn type_oids_in_path(
    client: &Client,
    path: &[String],
    types: &[&str],
) -> Result<Vec<Option<u32>>, tokio_postgres::Error> {
    set_path(client, path).await?;
    let oids = type_oids(client, types).await;
    reset_path(client, oids).await
}

/// Sets `path` for the session, for the lookups [`reset_path`] follows.
async fn set_path(client: &Client, path: &[String]) -> Result<(), tokio_postgres::Error> {
    let set = set_local_search_path_sql(path).replacen("SET LOCAL", "SET", 1);
    client.batch_execute(&set).await
}

/// Sets the session's path back, then hands on what was looked up under
/// [`set_path`] (for the session: the caller may or may not be in a
/// transaction; should a lookup fail inside one, its rollback undoes the
/// setting too).
async fn reset_path<T>(
    client: &Client,
    looked_up: Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error> {
    let reset = client.batch_execute("SET search_path TO DEFAULT").await;
    let looked_up = looked_up?;
    reset?;
    Ok(looked_up)
}

/// A column's type as an argument type (`app.items.id%TYPE`, `items.id%TYPE`,
/// identifiers quoted where needed): the relation as written (what
/// `to_regclass` reads) and the column's name.
fn column_reference(written: &str) -> Option<(&str, String)> {
    let reference = written.strip_suffix("%TYPE")?;
    let mut in_quotes = false;
    let mut last_dot = None;
    for (at, c) in reference.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => last_dot = Some(at),
            _ => {}
        }
    }
    let dot = last_dot?;
    let (relation, column) = (&reference[..dot], &reference[dot + 1..]);
    let column = match column.strip_prefix('"').and_then(|c| c.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => column.to_owned(),
    };
    (!relation.is_empty() && !column.is_empty()).then_some((relation, column))
}

/// The type of each column `%TYPE` names, as PostgreSQL resolves it for a
/// CREATE run with `path`: the relation found on the path, then its column
/// (`None`: no such relation or column; the CREATE will say so). Only the
/// relation is looked up under the routine's path; the column under the
/// agent's own.
async fn column_type_oids(
    client: &Client,
    path: &[String],
    columns: &[&str],
) -> Result<Vec<Option<u32>>, tokio_postgres::Error> {
    let references: Vec<(&str, String)> =
        columns.iter().filter_map(|c| column_reference(c)).collect();
    if references.is_empty() {
        return Ok(Vec::new());
    }
    let relations: Vec<&str> = references.iter().map(|(relation, _)| *relation).collect();
    let names: Vec<&str> = references
        .iter()
        .map(|(_, column)| column.as_str())
        .collect();
    set_path(client, path).await?;
    let relation_oids = catalog_oids(client, Lookup::Relation, &relations).await;
    let relation_oids = reset_path(client, relation_oids).await?;
    Ok(client
        .query_typed(
            "SELECT (SELECT a.atttypid FROM pg_catalog.pg_attribute a \
                     WHERE a.attrelid = u.rel AND a.attname = u.col::pg_catalog.name \
                       AND a.attnum > 0 AND NOT a.attisdropped) \
             FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), \
                             pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS u(rel, col, n) \
             ORDER BY u.n",
            &[(&relation_oids, Type::OID_ARRAY), (&names, Type::TEXT_ARRAY)],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// `format_type` of each oid under the agent's own path.
async fn spell(
    client: &Client,
    oids: Vec<u32>,
) -> Result<HashMap<u32, String>, tokio_postgres::Error> {
    if oids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .query_typed(
            "SELECT u.o, pg_catalog.format_type(u.o, NULL) \
             FROM pg_catalog.unnest($1::pg_catalog.oid[]) AS u(o)",
            &[(&oids, Type::OID_ARRAY)],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// An operator's argument types (`rollback rate(mood, score)`) as the ledger
/// and `oidvectortypes` spell them under the agent's path: each type the
/// agent's path does not resolve is looked up in the selector's schema, then
/// in `public` (where code without a declared path lives), and spelled as
/// `format_type` does (`public.mood`). A type found nowhere is kept as
/// written: it then matches nothing, and the job says no routine matched.
pub async fn selector_arg_types(
    client: &Client,
    selector: &RoutineSelector,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let Some(types) = &selector.arg_types else {
        return Ok(None);
    };
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    // Under the agent's path first: a builtin is never looked up elsewhere,
    // and a selector of builtins costs one query.
    let own = type_oids(client, &types).await?;
    let theirs = if own.iter().all(Option::is_some) {
        Vec::new()
    } else {
        let mut path: Vec<String> = selector.schema.iter().cloned().collect();
        path.push(CODE_DEFAULT_SEARCH_PATH.to_owned());
        type_oids_in_path(client, &path, &types).await?
    };
    let oids: Vec<Option<u32>> = own
        .iter()
        .enumerate()
        .map(|(i, oid)| oid.or(theirs.get(i).copied().flatten()))
        .collect();
    let spelled = spell(client, oids.iter().flatten().copied().collect()).await?;
    Ok(Some(
        types
            .iter()
            .zip(oids)
            .map(|(written, oid)| {
                oid.and_then(|oid| spelled.get(&oid).cloned())
                    .unwrap_or_else(|| (*written).to_owned())
            })
            .collect(),
    ))
}

#[cfg(test)]
mod column_reference_tests {
    use super::column_reference;

    #[test]
    fn a_columns_type_is_split_into_its_relation_and_column() {
        assert_eq!(
            column_reference("items.id%TYPE"),
            Some(("items", "id".to_owned()))
        );
        assert_eq!(
            column_reference("app.\"Lot Table\".\"Odd \"\"Col\"\"\"%TYPE"),
            Some(("app.\"Lot Table\"", "Odd \"Col\"".to_owned()))
        );
        // A dot inside quotes does not split.
        assert_eq!(
            column_reference("\"a.b\".c%TYPE"),
            Some(("\"a.b\"", "c".to_owned()))
        );
        for not_a_column in [
            "integer",
            "public.mood",
            "id%TYPE",
            ".id%TYPE",
            "items.%TYPE",
        ] {
            assert_eq!(column_reference(not_a_column), None, "{not_a_column}");
        }
    }
}
