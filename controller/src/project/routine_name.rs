//! Names that people write to point at routines: an operator's
//! `<procedure>` argument, a sidecar's `depends_on` entry or a smoke test's
//! `routine = "reconcilemupstream(text)"`.
//!
//! They are read with PostgreSQL's parser, as the object of a `DROP ROUTINE`
//! statement that is parsed and never run, so they follow PostgreSQL's rules
//! exactly: unquoted names fold to lower case, quoted ones keep their case,
//! whitespace and type aliases (`int`, `int4`, `integer`) do not matter.

use pg_query::protobuf::{self, node::Node as NodeKind, DropBehavior};

use super::type_names::{render_type_name, string_list, Modifiers};

/// A parsed reference to one routine or to all overloads of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutineName {
    pub schema: Option<String>,
    pub name: String,
    /// Input argument types, rendered without modifiers; None when the text
    /// had no parenthesised list, which means "any overload".
    pub arg_types: Option<Vec<String>>,
}

/// What a routine is matched on: its identity with argument types rendered
/// without modifiers (PostgreSQL ignores `numeric(10,2)`'s modifiers in a
/// signature).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    pub schema: String,
    pub name: String,
    pub arg_types: Vec<String>,
}

impl RoutineName {
    /// Parses `name`, `schema.name`, `name(type, ...)` or
    /// `schema.name(type, ...)`. The error says what is wrong, for the
    /// caller to wrap with where the text came from.
    pub fn parse(text: &str) -> Result<RoutineName, String> {
        if text.trim().is_empty() {
            return Err("it is empty".to_owned());
        }
        // A `;` is fine inside a quoted name ("weird;name"); a second
        // statement is refused below, where the parse says how many there are.
        if text.contains('\0') {
            return Err(
                "expected a name like addarc, public.addarc or addarc(text, text)".to_owned(),
            );
        }
        match Self::parse_plain(text) {
            Some(plain) => Ok(plain),
            None => Self::parse_with_parser(text),
        }
    }

    /// [`RoutineName::parse`] by PostgreSQL's parser, for any text.
    fn parse_with_parser(text: &str) -> Result<RoutineName, String> {
        let parsed =
            pg_query::parse(&format!("DROP ROUTINE {text}"), 0).map_err(|error| match error {
                pg_query::Error::Parse(message) => message,
                other => other.to_string(),
            })?;
        let object = match parsed.protobuf.stmts.as_slice() {
            [raw] => match raw.stmt.as_ref().and_then(|stmt| stmt.node.as_ref()) {
                Some(NodeKind::DropStmt(drop))
                    if !drop.missing_ok
                        && drop.behavior != DropBehavior::DropCascade as i32
                        && drop.objects.len() == 1 =>
                {
                    match &drop.objects[0].node {
                        Some(NodeKind::ObjectWithArgs(object)) => Some(object),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| "expected exactly one name like addarc or addarc(text, text)".to_owned())?;
        Self::from_object(object)
    }

    /// `name` or `schema.name` made of plain identifiers only — letters,
    /// digits, `_` and `$`, not starting with a digit or `$`, at most 63
    /// bytes, none of the parser's keywords — read as the parser reads them
    /// (folded to lower case) without it: a batch names a thousand routines
    /// this way, and each parse costs a protobuf round trip. Anything else
    /// is `None`, for the parser.
    fn parse_plain(text: &str) -> Option<RoutineName> {
        fn identifier(part: &str) -> Option<String> {
            let mut chars = part.chars();
            let first = chars.next()?;
            let plain = (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
                && part.len() <= 63;
            let folded = part.to_ascii_lowercase();
            (plain && !super::keywords::is_keyword(&folded)).then_some(folded)
        }
        let mut parts = text.split('.');
        let (first, second) = (parts.next()?, parts.next());
        if parts.next().is_some() {
            return None;
        }
        let (schema, name) = match second {
            Some(name) => (Some(identifier(first)?), identifier(name)?),
            None => (None, identifier(first)?),
        };
        Some(RoutineName {
            schema,
            name,
            arg_types: None,
        })
    }

    pub(super) fn from_object(object: &protobuf::ObjectWithArgs) -> Result<RoutineName, String> {
        let names = string_list(&object.objname).ok_or("unexpected name")?;
        let (schema, name) = match names.as_slice() {
            [name] => (None, *name),
            [schema, name] => (Some((*schema).to_owned()), *name),
            _ => return Err("use name or schema.name".to_owned()),
        };
        let arg_types = if object.args_unspecified {
            None
        } else {
            // `objargs` leaves out OUT arguments, which are not part of a
            // routine's identity (checked on PostgreSQL 15 for functions and
            // procedures alike).
            let types = object
                .objargs
                .iter()
                .map(|node| match &node.node {
                    Some(NodeKind::TypeName(type_name)) => {
                        render_type_name(type_name, Modifiers::Drop).map_err(|e| e.describe())
                    }
                    _ => Err("unexpected argument".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(types)
        };
        Ok(RoutineName {
            schema,
            name: name.to_owned(),
            arg_types,
        })
    }

    /// Whether this name designates the routine with `signature`.
    pub fn matches(&self, signature: &Signature) -> bool {
        self.schema
            .as_ref()
            .is_none_or(|schema| *schema == signature.schema)
            && self.name == signature.name
            && self
                .arg_types
                .as_ref()
                .is_none_or(|arg_types| *arg_types == signature.arg_types)
    }
}

/// An identifier as an operator types it so that PostgreSQL reads it back
/// unchanged: bare when it folds to itself (lower case, `_`, digits, not a
/// word the parser takes for something else), double-quoted otherwise.
pub fn written_identifier(identifier: &str) -> String {
    let plain = identifier
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && identifier
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && RoutineName::parse(identifier).is_ok_and(|name| name.name == identifier) {
        identifier.to_owned()
    } else {
        pgrollout_shared::routine::quote_identifier(identifier)
    }
}

/// A routine's identity as an operator writes it (`routine = …`, a
/// `<procedure>` argument): `RoutineName::parse` reads it back as the same
/// routine, whatever its schema's and name's case or spaces.
pub fn written_identity(identity: &pgrollout_shared::routine::RoutineIdentity) -> String {
    format!(
        "{}.{}({})",
        written_identifier(&identity.schema),
        written_identifier(&identity.name),
        identity.arg_types.join(", ")
    )
}

/// `text` as a TOML string a sidecar can hold: a literal string ('…') when
/// it has no single quote, so double-quoted identifiers stay readable.
pub fn toml_string(text: &str) -> String {
    if text.contains('\'') || text.contains('\n') {
        format!("{text:?}")
    } else {
        format!("'{text}'")
    }
}

/// Levenshtein distance, to suggest the name an operator probably meant.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_read_without_the_parser_are_read_as_the_parser_reads_them() {
        let long = "n".repeat(63);
        let too_long = "n".repeat(64);
        let mut texts: Vec<String> = [
            "calc_0016",
            "lib.calc_0016",
            "Lib.Calc",
            "_x",
            "x$1",
            "a1",
            "tap.ok",
            "public.abort",
            "select",
            "zone",
            "between",
            "json_table",
            "abort.x",
            "1x",
            "$x",
            "x.y.z",
            "x.",
            ".x",
            "x..y",
            "é",
            "x-y",
            "x y",
            " x",
            "x ",
            "\"X\"",
            "x()",
            "x(int)",
        ]
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
        texts.push(long.clone());
        texts.push(too_long);
        texts.extend(
            super::super::keywords::KEYWORDS
                .iter()
                .map(|k| (*k).to_owned()),
        );
        texts.extend(
            super::super::keywords::KEYWORDS
                .iter()
                .map(|k| format!("s.{}", k.to_uppercase())),
        );
        let mut fast = 0;
        for text in &texts {
            if let Some(plain) = RoutineName::parse_plain(text) {
                fast += 1;
                assert_eq!(Ok(plain), RoutineName::parse_with_parser(text), "{text:?}");
            }
        }
        assert_eq!(
            fast, 8,
            "calc_0016, lib.calc_0016, Lib.Calc, _x, x$1, a1, tap.ok and n×63 only"
        );
        assert_eq!(
            RoutineName::parse("Lib.Calc"),
            Ok(RoutineName {
                schema: Some("lib".into()),
                name: "calc".into(),
                arg_types: None
            })
        );
        assert_eq!(RoutineName::parse(&long).map(|n| n.name), Ok(long));
    }

    #[test]
    fn a_written_identity_parses_back_to_the_same_routine() {
        use pgrollout_shared::routine::RoutineIdentity;
        let identity = RoutineIdentity {
            schema: "Billing Core".into(),
            name: "calcTotal".into(),
            arg_types: vec!["\"Billing Core\".\"Money Amount\"".into(), "integer".into()],
        };
        let written = written_identity(&identity);
        assert_eq!(
            written,
            "\"Billing Core\".\"calcTotal\"(\"Billing Core\".\"Money Amount\", integer)"
        );
        let parsed = RoutineName::parse(&written).expect("a written identity parses");
        assert_eq!(parsed.schema.as_deref(), Some("Billing Core"));
        assert_eq!(parsed.name, "calcTotal");
        assert_eq!(written_identifier("addarc"), "addarc");
        assert_eq!(written_identifier("select"), "\"select\"");
        assert_eq!(written_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(toml_string(&written), format!("'{written}'"));
        assert_eq!(toml_string("it's"), "\"it's\"");
    }

    fn signature(schema: &str, name: &str, arg_types: &[&str]) -> Signature {
        Signature {
            schema: schema.to_owned(),
            name: name.to_owned(),
            arg_types: arg_types.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn names_fold_like_unquoted_identifiers() {
        let name = RoutineName::parse("AddArc").expect("valid");
        assert_eq!(name.name, "addarc");
        assert_eq!(name.schema, None);
        assert_eq!(name.arg_types, None);
        assert_eq!(
            RoutineName::parse("\"AddArc\"").expect("valid").name,
            "AddArc"
        );
        let qualified = RoutineName::parse("Public.addarc").expect("valid");
        assert_eq!(qualified.schema.as_deref(), Some("public"));
    }

    #[test]
    fn argument_lists_normalise_aliases_and_whitespace() {
        let name =
            RoutineName::parse("public.addarc( TEXT,text , int4,timestamptz)").expect("valid");
        assert_eq!(
            name.arg_types,
            Some(vec![
                "text".to_owned(),
                "text".to_owned(),
                "integer".to_owned(),
                "timestamp with time zone".to_owned()
            ])
        );
        assert!(name.matches(&signature(
            "public",
            "addarc",
            &["text", "text", "integer", "timestamp with time zone"]
        )));
        assert!(!name.matches(&signature(
            "lab",
            "addarc",
            &["text", "text", "integer", "timestamp with time zone"]
        )));
        let no_args = RoutineName::parse("f()").expect("valid");
        assert_eq!(no_args.arg_types, Some(vec![]));
        assert!(!no_args.matches(&signature("public", "f", &["integer"])));
    }

    #[test]
    fn a_quoted_name_may_hold_what_sql_would_not() {
        let name = RoutineName::parse("\"weird;name\"(int)").expect("a quoted name");
        assert_eq!(name.name, "weird;name");
        assert_eq!(name.arg_types, Some(vec!["integer".to_owned()]));
    }

    #[test]
    fn anything_but_one_name_is_refused() {
        for text in [
            "",
            "a, b",
            "a; DROP TABLE t",
            "a CASCADE",
            "IF EXISTS a",
            "a.b.c.d",
            "f(int",
        ] {
            assert!(
                RoutineName::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("addarc", "addarc"), 0);
        assert_eq!(edit_distance("adarc", "addarc"), 1);
        assert_eq!(edit_distance("removearc", "remvoearc"), 2);
    }
}
