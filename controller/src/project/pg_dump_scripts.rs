//! What pg_dump writes around a routine, as `pg_restore --function 'f(int)'`
//! or a dump split per object leaves it in a file (issue 15: real code
//! deploys as it is):
//!
//! ```sql
//! \restrict AqAh6L8WGyjM…
//! SET statement_timeout = 0;  …  SET client_encoding = 'UTF8';
//! SELECT pg_catalog.set_config('search_path', '', false);
//! SET check_function_bodies = false;  SET xmloption = content;  …
//! CREATE FUNCTION app.g(t text) RETURNS text …;
//! ALTER FUNCTION app.g(t text) OWNER TO postgres;
//! \unrestrict AqAh6L8WGyjM…
//! ```
//!
//! The `SET`s are `session_settings.rs`'s; `\restrict` / `\unrestrict`
//! (pg_dump 13.22, 14.19, 15.14, 16.10, 17.6 and later: psql meta-commands
//! that stop a restored script from running other meta-commands; pgrollout
//! runs none) are blanked before the parse with the other meta-commands a
//! deploy already honours (`psql_scripts::without_honoured_meta_commands`).
//! Here is the one shape that is neither: pg_dump's empty `search_path`
//! makes every name in the script need its schema, which pg_dump writes; a
//! deploy creates and validates with the file's declared path instead, so
//! the `SELECT` is not run.

use pg_query::protobuf;

use super::session_settings::SessionSetting;

/// pg_dump's `SELECT pg_catalog.set_config('search_path', '', false)`: not
/// run, with why. Another `set_config` of the search path is refused with
/// what to write instead; any other SELECT is not this module's (`None`).
pub(super) fn judge_select(select: &protobuf::SelectStmt) -> Option<SessionSetting> {
    let deparsed = pg_query::NodeRef::SelectStmt(select)
        .deparse(Default::default())
        .ok()?;
    let sets_search_path = [
        "SELECT pg_catalog.set_config('search_path'",
        "SELECT set_config('search_path'",
    ]
    .iter()
    .any(|start| deparsed.starts_with(start));
    if !sets_search_path {
        return None;
    }
    let pg_dumps = matches!(
        deparsed.as_str(),
        "SELECT pg_catalog.set_config('search_path', '', false)"
            | "SELECT set_config('search_path', '', false)"
    );
    Some(if pg_dumps {
        SessionSetting::NotRun(Some(
            "pg_dump's empty search_path is not used: the file's routines are created and their \
             bodies validated with the file's declared path ([schema] in pgrollout.toml or the \
             sidecar, else public)",
        ))
    } else {
        SessionSetting::Refused(
            "write `SET search_path = schema, …` at the file's top (or declare [schema] in \
             pgrollout.toml or the sidecar): pgrollout runs each CREATE with it",
        )
    })
}
