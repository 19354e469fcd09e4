//! `?N` and `?` placeholders, as the store writes them, to PostgreSQL's `$N`.

/// Rewrites the placeholders outside quoted text: `?N` becomes `$N`, a bare
/// `?` the next number after the highest seen so far (as SQLite numbers it).
pub(super) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut highest = 0_usize;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let number = if digits.is_empty() {
                    highest + 1
                } else {
                    digits.parse().unwrap_or(highest + 1)
                };
                highest = highest.max(number);
                out.push('$');
                out.push_str(&number.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn numbered_and_bare_placeholders_become_dollar_numbers_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT '?1', a FROM t WHERE b = ?2 AND c = ?1 AND d = ?"),
            "SELECT '?1', a FROM t WHERE b = $2 AND c = $1 AND d = $3"
        );
        assert_eq!(to_postgres("x = ? AND y = ?"), "x = $1 AND y = $2");
    }
}
