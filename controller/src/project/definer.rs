//! `SECURITY DEFINER` routines without `SET search_path` (issue 13): such a
//! routine runs with its owner's privileges but resolves names through the
//! caller's `search_path`, so a caller who can create objects in a schema on
//! that path (or in `pg_temp`) can make it run their code as the owner — the
//! classic PostgreSQL privilege escalation. `plan`, `check` and the syntax
//! gate warn about each one; an environment's `require_search_path = true`
//! makes the syntax gate refuse them.

use pg_query::protobuf::{node::Node as NodeKind, VariableSetKind};

/// A warning for each routine whose CREATE statement is `SECURITY DEFINER`
/// without a `SET search_path`. `routines` yields (identity, source path,
/// source line, CREATE statement); a statement that does not parse is left
/// to the parser's own errors.
pub fn unsafe_definers<'a>(
    routines: impl IntoIterator<Item = (String, &'a str, u32, &'a str)>,
) -> Vec<String> {
    routines
        .into_iter()
        .filter(|(_, _, _, create_sql)| definer_without_search_path(create_sql))
        .map(|(identity, path, line, _)| {
            let at = match line {
                0 => path.to_owned(),
                line => format!("{path}:{line}"),
            };
            format!(
                "{at}: {identity} is SECURITY DEFINER without SET search_path: it runs as its \
                 owner but resolves names through the caller's search_path; add e.g. \
                 SET search_path = pg_catalog, pg_temp (and the schemas it needs, qualified)"
            )
        })
        .collect()
}

/// [`unsafe_definers`] of a plan's routines as they travel.
pub fn plan_warnings(routines: &[pgrollout_shared::proto::Routine]) -> Vec<String> {
    unsafe_definers(routines.iter().map(|r| {
        (
            format!("{}.{}({})", r.schema, r.name, r.arg_types.join(", ")),
            r.source_path.as_str(),
            r.source_line,
            r.create_sql.as_str(),
        )
    }))
}

fn definer_without_search_path(create_sql: &str) -> bool {
    // SECURITY DEFINER is spelt with the keyword in the text (a keyword
    // cannot be quoted or escaped): without the word, nothing to parse. The
    // gate reads every routine of every plan, and a parse is ~10 µs of
    // libpg_query's protobuf output (issue 15 item 9: ~4 ms a batch).
    if !contains_ignoring_ascii_case(create_sql.as_bytes(), b"definer") {
        return false;
    }
    let Ok(parsed) = pg_query::parse(create_sql, 0) else {
        return false;
    };
    let Some(NodeKind::CreateFunctionStmt(create)) = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|s| s.node.as_ref())
    else {
        return false;
    };
    let mut definer = false;
    let mut search_path = false;
    for option in &create.options {
        let Some(NodeKind::DefElem(element)) = option.node.as_ref() else {
            continue;
        };
        let arg = element.arg.as_ref().and_then(|a| a.node.as_ref());
        match (element.defname.as_str(), arg) {
            ("security", Some(NodeKind::Boolean(value))) => definer = value.boolval,
            ("set", Some(NodeKind::VariableSetStmt(set)))
                if set.name.eq_ignore_ascii_case("search_path")
                    && set.kind != VariableSetKind::VarReset as i32 =>
            {
                search_path = true;
            }
            _ => {}
        }
    }
    definer && !search_path
}

fn contains_ignoring_ascii_case(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len())
        .any(|window| window.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warns(sql: &str) -> bool {
        !unsafe_definers([("public.f()".to_owned(), "procedures/f.sql", 3, sql)]).is_empty()
    }

    #[test]
    fn a_definer_needs_its_own_search_path() {
        let body = "RETURNS int LANGUAGE sql AS 'SELECT 1'";
        assert!(warns(&format!(
            "CREATE FUNCTION f() {body} SECURITY DEFINER"
        )));
        assert!(warns(&format!(
            "CREATE FUNCTION f() {body} SECURITY DEFINER SET work_mem = '1MB'"
        )));
        assert!(warns(&format!(
            "CREATE FUNCTION f() {body} SECURITY DEFINER RESET search_path"
        )));
        assert!(!warns(&format!(
            "CREATE FUNCTION f() {body} SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
        )));
        assert!(!warns(&format!(
            "CREATE FUNCTION f() {body} SECURITY DEFINER SET search_path FROM CURRENT"
        )));
        assert!(!warns(&format!("CREATE FUNCTION f() {body}")));
        assert!(!warns(&format!(
            "CREATE FUNCTION f() {body} SECURITY INVOKER"
        )));
        assert!(warns(
            "CREATE PROCEDURE p() LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'"
        ));
        // Keywords in any case, across lines: the word pre-filter sees them.
        assert!(warns(&format!(
            "CREATE FUNCTION f() {body} security\n  DeFiNeR"
        )));
        assert!(warns(&format!(
            "CREATE FUNCTION f() {body} EXTERNAL SECURITY definer"
        )));
        let text = unsafe_definers([(
            "public.f()".to_owned(),
            "procedures/f.sql",
            3,
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'",
        )]);
        assert!(text[0].starts_with(
            "procedures/f.sql:3: public.f() is SECURITY DEFINER without SET search_path"
        ));
    }
}
