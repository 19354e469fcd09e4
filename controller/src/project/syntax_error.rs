//! Finds where a parse error happened.
//!
//! The `pg_query` crate (18.1) reports only the message of a parse error: the
//! cursor position libpg_query computes is dropped by the Rust binding (its
//! FFI module is private, and this workspace forbids `unsafe`). PostgreSQL's
//! messages name the offending token (`syntax error at or near "FROMM"`), so
//! the position is recovered with the parser itself: PostgreSQL's scanner
//! lists the tokens, the ones whose text is the named token are candidates,
//! and when there are several, the text is re-parsed up to each candidate in
//! turn — the first prefix that fails with the very same message ends at the
//! offending token (an LR parser never reads past the first token it cannot
//! accept).

use pg_query::protobuf::Token;

const NEAR_MARKER: &str = " at or near \"";
const END_OF_INPUT_MARKER: &str = "at end of input";
/// Re-parsing is cheap, but a pathological file should not cost seconds.
const MAX_CANDIDATES_TO_CHECK: usize = 50;

/// The byte offset in `text` at which the parser that produced `message`
/// stopped, or None if the message names no place.
///
/// `error_of_prefix` parses a prefix of `text` the same way the original
/// parse did and returns its error message, if any; return None from it
/// when re-parsing is not possible, and the first candidate is taken.
pub fn locate_error(
    text: &str,
    message: &str,
    error_of_prefix: impl Fn(&str) -> Option<String>,
) -> Option<usize> {
    if message.ends_with(END_OF_INPUT_MARKER) {
        return Some(end_of_last_token(text));
    }
    let near = near_text(message)?;
    let candidates = candidate_offsets(text, near);
    let first = *candidates.first()?;
    if candidates.len() == 1 {
        return Some(first);
    }
    candidates
        .iter()
        .take(MAX_CANDIDATES_TO_CHECK)
        .copied()
        .find(|&offset| {
            text.get(..offset + near.len())
                .and_then(&error_of_prefix)
                .is_some_and(|prefix_message| prefix_message == message)
        })
        .or(Some(first))
}

/// The token text in `... at or near "TOKEN"`. PostgreSQL prints the token
/// as written, without escaping, and ends the message with the quote.
fn near_text(message: &str) -> Option<&str> {
    let start = message.rfind(NEAR_MARKER)? + NEAR_MARKER.len();
    let near = message.get(start..)?.strip_suffix('"')?;
    (!near.is_empty()).then_some(near)
}

/// Offsets of the tokens spelled `near`. When the scanner itself fails (an
/// unterminated literal), the message quotes the rest of the input from the
/// bad token on, so the places where that text occurs are the candidates.
fn candidate_offsets(text: &str, near: &str) -> Vec<usize> {
    if let Ok(scan) = pg_query::scan(text) {
        let tokens: Vec<usize> = scan
            .tokens
            .iter()
            .filter_map(|token| {
                let start = usize::try_from(token.start).ok()?;
                let end = usize::try_from(token.end).ok()?;
                (text.get(start..end)? == near).then_some(start)
            })
            .collect();
        if !tokens.is_empty() {
            return tokens;
        }
    }
    text.match_indices(near).map(|(offset, _)| offset).collect()
}

/// Where the input ends for the parser: after the last token that is not a
/// comment (trailing whitespace and comments are not part of any statement).
pub fn end_of_last_token(text: &str) -> usize {
    pg_query::scan(text)
        .ok()
        .and_then(|scan| {
            scan.tokens
                .iter()
                .rev()
                .find(|token| !is_comment(token.token))
                .and_then(|token| usize::try_from(token.end).ok())
        })
        .unwrap_or_else(|| text.trim_end().len())
}

/// Whether a scanner token is a comment.
pub fn is_comment(token: i32) -> bool {
    matches!(
        Token::try_from(token),
        Ok(Token::SqlComment | Token::CComment)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate_sql(text: &str) -> Option<usize> {
        let message = match pg_query::parse(text, 0) {
            Err(pg_query::Error::Parse(message)) => message,
            other => panic!("expected a parse error, got {other:?}"),
        };
        locate_error(text, &message, |prefix| match pg_query::parse(prefix, 0) {
            Err(pg_query::Error::Parse(message)) => Some(message),
            _ => None,
        })
    }

    #[test]
    fn a_unique_token_is_found_directly() {
        let text = "SELECT 1;\nSELECT a FROMM b\n  WHERE x;";
        assert_eq!(locate_sql(text), text.find("b\n"));
    }

    #[test]
    fn a_repeated_token_is_told_apart_by_reparsing() {
        // `x` appears three times; only the third is an error.
        let text = "SELECT x FROM x;\nSELECT 1 x x;";
        assert_eq!(locate_sql(text), text.rfind('x'));
    }

    #[test]
    fn unterminated_literals_point_at_their_start() {
        let text = "SELECT 1;\nSELECT $$abc\n";
        assert_eq!(locate_sql(text), text.find("$$"));
    }

    #[test]
    fn end_of_input_points_after_the_last_token() {
        let text = "SELECT 1 +\n-- trailing comment\n";
        assert_eq!(locate_sql(text), Some("SELECT 1 +".len()));
    }
}
