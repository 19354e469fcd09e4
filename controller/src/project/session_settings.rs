//! `SET` statements that scripts written for psql keep at the top of a file
//! (`SET client_min_messages = warning`, `SET check_function_bodies =
//! false`, pg_dump's timeouts): settings of the session that runs the
//! script, not part of any routine. A deploy runs in the agent's session,
//! so they are accepted and **not run** — those whose absence changes
//! nothing of what is created, each with a warning where a user could
//! expect otherwise. A setting that would change how the file itself reads
//! (`standard_conforming_strings = off`, another `client_encoding`) is
//! refused: pgrollout reads every file the one way.

use pg_query::protobuf::{a_const::Val, node::Node as NodeKind, VariableSetStmt};

/// What becomes of a `SET` of the session in a procedure file.
pub enum SessionSetting {
    /// Not run; when a user could expect otherwise, why.
    NotRun(Option<&'static str>),
    /// Refused: why, and what to do.
    Refused(&'static str),
}

/// `None` when `set` is not one of the settings a file may carry.
pub fn judge(set: &VariableSetStmt) -> Option<SessionSetting> {
    if set.is_local {
        return None;
    }
    let value = value(set);
    let name = set.name.to_ascii_lowercase();
    let not_run = |why| Some(SessionSetting::NotRun(Some(why)));
    match name.as_str() {
        "client_min_messages" => Some(SessionSetting::NotRun(None)),
        "check_function_bodies" => not_run(
            "pgrollout validates every body whatever it says (each CREATE in dependency order, \
             in one transaction that commits only when all are valid)",
        ),
        "statement_timeout"
        | "lock_timeout"
        | "idle_in_transaction_session_timeout"
        | "transaction_timeout" => match value.as_deref() {
            // pg_dump's: no limit for the script, which says nothing a
            // deploy (under the agent's own limits) could miss.
            Some("0") => Some(SessionSetting::NotRun(None)),
            _ => not_run("a deploy runs with the agent's own session settings"),
        },
        // pg_dump's: neither changes what a CREATE makes.
        "row_security" => Some(SessionSetting::NotRun(None)),
        "xmloption" => match value.as_deref() {
            Some("content") => Some(SessionSetting::NotRun(None)),
            _ => Some(SessionSetting::Refused(
                "pgrollout creates routines with the server's default (content); remove the SET",
            )),
        },
        "client_encoding" => match value.as_deref() {
            Some("utf8" | "utf-8" | "unicode") => Some(SessionSetting::NotRun(None)),
            _ => Some(SessionSetting::Refused(
                "pgrollout reads every file as UTF-8; convert the file, and remove the SET",
            )),
        },
        "standard_conforming_strings" => match value.as_deref() {
            Some("on" | "true" | "1") => Some(SessionSetting::NotRun(None)),
            _ => Some(SessionSetting::Refused(
                "pgrollout reads string literals as PostgreSQL does by default (backslashes are \
                 literal); write escapes as E'…' and remove the SET",
            )),
        },
        _ => None,
    }
}

/// The value set, lower-cased, when it is one constant.
fn value(set: &VariableSetStmt) -> Option<String> {
    let [one] = set.args.as_slice() else {
        return None;
    };
    match &one.node {
        Some(NodeKind::AConst(constant)) => match &constant.val {
            Some(Val::Sval(text)) => Some(text.sval.to_ascii_lowercase()),
            Some(Val::Ival(number)) => Some(number.ival.to_string()),
            Some(Val::Boolval(flag)) => Some(flag.boolval.to_string()),
            _ => None,
        },
        _ => None,
    }
}
