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
//! The `SET`s are `session_settings.rs`'s; here are the two shapes that are
//! not `SET`s. `\restrict` / `\unrestrict` (pg_dump 13.22, 14.19, 15.14,
//! 16.10, 17.6 and later) are psql meta-commands that stop a restored script
//! from running other meta-commands: pgrollout runs none, so the lines are
//! blanked before the parse. pg_dump's empty `search_path` makes every name
//! in the script need its schema, which pg_dump writes; a deploy creates
//! and validates with the file's declared path instead, so the `SELECT` is
//! not run.

use std::borrow::Cow;

use pg_query::protobuf;

use super::session_settings::SessionSetting;

/// `text` with each `\restrict <key>` and `\unrestrict <key>` line blanked
/// (spaces, so every position stays where it was) — only where the line
/// starts outside any statement, string, body or comment, as pg_dump writes
/// it. Anything else starting with `\` is left for the parse to refuse.
pub(super) fn without_restrict_lines(text: &str) -> Cow<'_, str> {
    if !text.contains("\\restrict") && !text.contains("\\unrestrict") {
        return Cow::Borrowed(text);
    }
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim();
        if is_restrict_line(content) {
            let start = offset + (line.len() - line.trim_start().len());
            lines.push((start, start + content.len()));
        }
        offset += line.len();
    }
    let blank = |lines: &[(usize, usize)]| {
        let mut bytes = text.as_bytes().to_vec();
        for &(start, end) in lines {
            bytes[start..end].fill(b' ');
        }
        // Only ASCII bytes were replaced by ASCII spaces.
        String::from_utf8(bytes).expect("still UTF-8")
    };
    // Scanned without them (a key may start with a digit, which the
    // scanner refuses as a number's trailing junk), each line must have
    // been between statements: no token (a string, a body, a comment)
    // spans it, and the last token before it ends a statement.
    let Ok(scanned) = pg_query::scan(&blank(&lines)) else {
        return Cow::Borrowed(text);
    };
    let is_comment = |token: &protobuf::ScanToken| {
        [protobuf::Token::SqlComment, protobuf::Token::CComment]
            .iter()
            .any(|kind| *kind as i32 == token.token)
    };
    lines.retain(|&(start, end)| {
        let spanned = scanned
            .tokens
            .iter()
            .any(|token| (token.start as usize) < end && (token.end as usize) > start);
        let previous = scanned
            .tokens
            .iter()
            .rev()
            .find(|token| (token.end as usize) <= start && !is_comment(token));
        !spanned
            && previous.is_none_or(|token| &text[token.start as usize..token.end as usize] == ";")
    });
    if lines.is_empty() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(blank(&lines))
}

/// `\restrict KEY` or `\unrestrict KEY`: pg_dump's key is letters and
/// digits.
fn is_restrict_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let key = words.next().unwrap_or_default();
    matches!(command, "\\restrict" | "\\unrestrict")
        && !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric())
        && words.next().is_none()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_lines_are_blanked_only_between_statements() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict 6qOTjGqa9\n\nSET a = 0;\n\
                    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n\\restrict inbody\n$$;\n\
                    \n\\unrestrict AqAh6L8W9\n";
        let blanked = without_restrict_lines(dump);
        assert_eq!(blanked.len(), dump.len());
        assert_eq!(blanked.lines().count(), dump.lines().count());
        assert!(!blanked.contains("AqAh6L8W9"), "{blanked}");
        assert!(
            !blanked.contains("6qOTjGqa9"),
            "a key may start with a digit: {blanked}"
        );
        assert!(
            blanked.contains("\\restrict inbody"),
            "a body is left as it is"
        );
        for kept in [
            "\\set ON_ERROR_STOP on\n",
            "\\restrict two words\n",
            "SELECT 1 \\restrict key\n",
            "SELECT 1\n\\restrict key\n",
            "-- \\restrict key\n",
            "/*\n\\restrict key\n*/\n",
            "SELECT '\n\\restrict key\n';\n",
        ] {
            assert_eq!(without_restrict_lines(kept), kept);
        }
    }
}
