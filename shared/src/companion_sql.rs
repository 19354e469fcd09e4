//! The wire check of a routine's companion statements (issue 15): the
//! GRANT/REVOKE, COMMENT ON and ALTER … OWNER TO statements its source file
//! keeps next to it. The controller's parse accepted them against the file;
//! here, on both sides of the wire, each must at least be one statement of
//! those kinds (the agent also runs each over the extended protocol, which
//! takes exactly one statement).

use crate::routine::{check_statement, InvalidField};

/// At most this many companion statements per routine.
pub const MAX_COMPANION_STATEMENTS: usize = 256;

/// Fails on the first statement that is not acceptable, naming it by its
/// index; a retired routine has none (nothing runs for it but the DROP).
pub(crate) fn check(statements: &[String], retired: bool) -> Result<(), InvalidField> {
    if statements.len() > MAX_COMPANION_STATEMENTS {
        return Err(InvalidField::new(
            "companion_sql",
            format!("more than {MAX_COMPANION_STATEMENTS} statements"),
        ));
    }
    if retired && !statements.is_empty() {
        return Err(InvalidField::new(
            "companion_sql",
            "a retired routine has no statements to run",
        ));
    }
    for (index, statement) in statements.iter().enumerate() {
        let field = format!("companion_sql[{index}]");
        check_statement(&field, statement)?;
        let first_word: String = statement
            .trim_start()
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let known = ["grant", "revoke", "comment", "alter"]
            .iter()
            .any(|verb| first_word.eq_ignore_ascii_case(verb));
        if !known {
            return Err(InvalidField::new(
                field,
                "not a GRANT, REVOKE, COMMENT or ALTER statement",
            ));
        }
    }
    Ok(())
}
