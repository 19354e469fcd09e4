//! Renders the argument types of a parsed routine the way PostgreSQL's
//! `format_type` shows them (`integer`, `character varying(20)`,
//! `timestamp with time zone`, `text[]`), so identities read naturally, are
//! accepted by `to_regprocedure()`, and two spellings of one type (`int`,
//! `int4`, `integer`) render the same.

use pg_query::protobuf::{self, node::Node as NodeKind, KeywordKind};

/// Why a type cannot be part of a routine identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeNameError {
    /// `table.column%TYPE` needs the catalog to resolve.
    PercentType { written: String },
    /// `SETOF` is only valid as a return type.
    Setof,
    /// A type modifier that is neither a constant nor a plain name.
    UnsupportedModifier,
    /// The parse tree did not hold a type name where one was expected.
    Malformed,
}

impl TypeNameError {
    /// An operator-facing explanation, without the file position.
    pub fn describe(&self) -> String {
        match self {
            TypeNameError::PercentType { written } => format!(
                "argument type {written}%TYPE: a column's type is written [schema.]table.column%TYPE"
            ),
            TypeNameError::Setof => "SETOF is not allowed for an argument type".to_owned(),
            TypeNameError::UnsupportedModifier => {
                "unsupported type modifier: only constants and plain names are allowed".to_owned()
            }
            TypeNameError::Malformed => "unexpected type name in the parse tree".to_owned(),
        }
    }
}

/// Whether type modifiers (`numeric(10,2)`) are kept. PostgreSQL ignores
/// them in routine signatures, so comparisons drop them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifiers {
    Keep,
    Drop,
}

/// Renders a parsed type name. Arrays get one `[]` whatever their declared
/// dimensions, as PostgreSQL does.
pub fn render_type_name(
    type_name: &protobuf::TypeName,
    modifiers: Modifiers,
) -> Result<String, TypeNameError> {
    let names = string_list(&type_name.names).ok_or(TypeNameError::Malformed)?;
    if type_name.pct_type {
        // A column's type (`items.id%TYPE`): PostgreSQL resolves it when it
        // runs the CREATE, and so does the agent, with the routine's search
        // path, wherever it needs the routine's signature
        // (`agent/src/sql/signatures.rs`). The identity keeps it as written.
        if !(2..=3).contains(&names.len()) || !type_name.array_bounds.is_empty() {
            return Err(TypeNameError::PercentType {
                written: names.join("."),
            });
        }
        let quoted: Vec<String> = names
            .iter()
            .map(|name| quote_identifier_if_needed(name))
            .collect();
        return Ok(format!("{}%TYPE", quoted.join(".")));
    }
    if type_name.setof {
        return Err(TypeNameError::Setof);
    }
    let explicit_modifiers = explicit_modifiers(&type_name.typmods)?;
    let (schema, name) = match names.as_slice() {
        [name] => (None, *name),
        [schema, name] => (Some(*schema), *name),
        _ => return Err(TypeNameError::Malformed),
    };
    let is_builtin_spelling = matches!(schema, None | Some("pg_catalog"));
    let mut rendered = match builtin_rendering(name).filter(|_| is_builtin_spelling) {
        Some(builtin) => builtin.render(&explicit_modifiers, &type_name.typmods, modifiers),
        None => {
            let mut rendered = match schema {
                Some(schema) if schema != "pg_catalog" => {
                    format!(
                        "{}.{}",
                        quote_identifier_if_needed(schema),
                        quote_identifier_if_needed(name)
                    )
                }
                _ => builtin_type_identifier(name),
            };
            if modifiers == Modifiers::Keep && !explicit_modifiers.is_empty() {
                rendered.push_str(&format!("({})", explicit_modifiers.join(",")));
            }
            rendered
        }
    };
    if !type_name.array_bounds.is_empty() {
        rendered.push_str("[]");
    }
    Ok(rendered)
}

/// Quotes an identifier only when PostgreSQL would need it, like
/// `quote_ident()`: anything but lowercase letters, digits and underscores
/// (not starting with a digit), or a keyword that is not unreserved.
pub fn quote_identifier_if_needed(identifier: &str) -> String {
    let mut characters = identifier.chars();
    let plain = characters
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && characters.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !is_keyword_needing_quotes(identifier) {
        identifier.to_owned()
    } else {
        format!("\"{}\"", identifier.replace('"', "\"\""))
    }
}

/// An unqualified (or `pg_catalog`) type name. Some keywords name the very
/// type they spell (`json` is a keyword since PostgreSQL 16 and reads as
/// `pg_catalog.json`), so they need no quotes; `"char"` does, because `char`
/// reads as `character`. The parser decides which is which.
fn builtin_type_identifier(name: &str) -> String {
    let quoted = quote_identifier_if_needed(name);
    if quoted == name || name.contains('"') {
        return quoted;
    }
    let reads_as_itself = pg_query::parse(name, pg_query::ParserOptions::TYPE_NAME)
        .ok()
        .and_then(|parsed| {
            let node = parsed
                .protobuf
                .stmts
                .first()?
                .stmt
                .as_ref()?
                .node
                .as_ref()?;
            let NodeKind::List(list) = node else {
                return None;
            };
            let names = string_list(&list.items)?;
            Some(match names.as_slice() {
                [single] => *single == name,
                ["pg_catalog", type_name] => *type_name == name,
                _ => false,
            })
        })
        .unwrap_or(false);
    if reads_as_itself {
        name.to_owned()
    } else {
        quoted
    }
}

fn is_keyword_needing_quotes(identifier: &str) -> bool {
    // The scanner knows PostgreSQL's keyword list and its categories; only
    // unreserved keywords may stand as identifiers everywhere.
    match pg_query::scan_tokens(identifier) {
        Ok(tokens) => tokens.iter().any(|token| {
            !matches!(
                KeywordKind::try_from(token.keyword_kind),
                Ok(KeywordKind::NoKeyword | KeywordKind::UnreservedKeyword)
            )
        }),
        Err(_) => true,
    }
}

/// The text of a list of `String` nodes (qualified names), or None if any
/// element is something else.
pub fn string_list(nodes: &[protobuf::Node]) -> Option<Vec<&str>> {
    nodes
        .iter()
        .map(|node| match &node.node {
            Some(NodeKind::String(string)) => Some(string.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// The modifiers written in the source. The grammar adds implicit ones
/// (`char` is `bpchar(1)`, `interval(2)` carries a field mask) at location
/// -1; those are not the author's and are left out.
fn explicit_modifiers(typmods: &[protobuf::Node]) -> Result<Vec<String>, TypeNameError> {
    let mut rendered = Vec::new();
    for typmod in typmods {
        match &typmod.node {
            Some(NodeKind::AConst(constant)) => {
                if constant.location < 0 {
                    continue;
                }
                let text = match &constant.val {
                    Some(protobuf::a_const::Val::Ival(integer)) => integer.ival.to_string(),
                    Some(protobuf::a_const::Val::Fval(float)) => float.fval.clone(),
                    Some(protobuf::a_const::Val::Sval(string)) => {
                        format!("'{}'", string.sval.replace('\'', "''"))
                    }
                    _ => return Err(TypeNameError::UnsupportedModifier),
                };
                rendered.push(text);
            }
            Some(NodeKind::ColumnRef(column)) => {
                let names =
                    string_list(&column.fields).ok_or(TypeNameError::UnsupportedModifier)?;
                rendered.push(
                    names
                        .iter()
                        .map(|name| quote_identifier_if_needed(name))
                        .collect::<Vec<_>>()
                        .join("."),
                );
            }
            _ => return Err(TypeNameError::UnsupportedModifier),
        }
    }
    Ok(rendered)
}

/// How `format_type` spells a built-in type whose internal name differs
/// from what people write.
#[derive(Clone, Copy)]
enum BuiltinRendering {
    /// A fixed name; modifiers (if any) follow in parentheses.
    Plain(&'static str),
    /// `timestamp(3) with time zone`: modifiers go between the two parts.
    Split(&'static str, &'static str),
    /// `interval day to second(3)`: the first modifier is a field mask.
    Interval,
}

fn builtin_rendering(internal_name: &str) -> Option<BuiltinRendering> {
    use BuiltinRendering::{Interval, Plain, Split};
    Some(match internal_name {
        "bool" => Plain("boolean"),
        "int2" => Plain("smallint"),
        "int4" => Plain("integer"),
        "int8" => Plain("bigint"),
        "float4" => Plain("real"),
        "float8" => Plain("double precision"),
        "varchar" => Plain("character varying"),
        "bpchar" => Plain("character"),
        "varbit" => Plain("bit varying"),
        "bit" => Plain("bit"),
        "numeric" => Plain("numeric"),
        "timestamp" => Split("timestamp", " without time zone"),
        "timestamptz" => Split("timestamp", " with time zone"),
        "time" => Split("time", " without time zone"),
        "timetz" => Split("time", " with time zone"),
        "interval" => Interval,
        _ => return None,
    })
}

impl BuiltinRendering {
    fn render(
        self,
        explicit_modifiers: &[String],
        all_modifiers: &[protobuf::Node],
        modifiers: Modifiers,
    ) -> String {
        let keep = modifiers == Modifiers::Keep;
        let in_parentheses = |list: &[String]| {
            if keep && !list.is_empty() {
                format!("({})", list.join(","))
            } else {
                String::new()
            }
        };
        match self {
            BuiltinRendering::Plain(name) => {
                format!("{name}{}", in_parentheses(explicit_modifiers))
            }
            BuiltinRendering::Split(name, suffix) => {
                format!("{name}{}{suffix}", in_parentheses(explicit_modifiers))
            }
            BuiltinRendering::Interval => render_interval(all_modifiers, keep),
        }
    }
}

/// `interval` carries its fields as a bit mask in the first modifier (set
/// implicitly to "full range" by `interval(p)`) and the precision second.
fn render_interval(modifiers: &[protobuf::Node], keep: bool) -> String {
    if !keep {
        return "interval".to_owned();
    }
    let integers: Vec<i32> = modifiers
        .iter()
        .filter_map(|node| match &node.node {
            Some(NodeKind::AConst(protobuf::AConst {
                val: Some(protobuf::a_const::Val::Ival(integer)),
                ..
            })) => Some(integer.ival),
            _ => None,
        })
        .collect();
    let mut rendered = "interval".to_owned();
    if let Some(fields) = integers.first().and_then(|mask| interval_fields(*mask)) {
        rendered.push(' ');
        rendered.push_str(fields);
    }
    if let Some(precision) = integers.get(1) {
        rendered.push_str(&format!("({precision})"));
    }
    rendered
}

/// Field masks from PostgreSQL's `datetime.h` (`INTERVAL_MASK`), as
/// `intervaltypmodout` names them.
fn interval_fields(mask: i32) -> Option<&'static str> {
    const MONTH: i32 = 1 << 1;
    const YEAR: i32 = 1 << 2;
    const DAY: i32 = 1 << 3;
    const HOUR: i32 = 1 << 10;
    const MINUTE: i32 = 1 << 11;
    const SECOND: i32 = 1 << 12;
    Some(match mask {
        YEAR => "year",
        MONTH => "month",
        DAY => "day",
        HOUR => "hour",
        MINUTE => "minute",
        SECOND => "second",
        m if m == YEAR | MONTH => "year to month",
        m if m == DAY | HOUR => "day to hour",
        m if m == DAY | HOUR | MINUTE => "day to minute",
        m if m == DAY | HOUR | MINUTE | SECOND => "day to second",
        m if m == HOUR | MINUTE => "hour to minute",
        m if m == HOUR | MINUTE | SECOND => "hour to second",
        m if m == MINUTE | SECOND => "minute to second",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders the type of `f(a <written>)` as the loader would.
    fn render(written: &str, modifiers: Modifiers) -> Result<String, TypeNameError> {
        let sql = format!("CREATE FUNCTION f(a {written}) RETURNS void LANGUAGE sql AS ''");
        let parsed = pg_query::parse(&sql, 0).expect("test SQL parses");
        let statement = parsed.protobuf.stmts[0]
            .stmt
            .as_ref()
            .and_then(|s| s.node.as_ref());
        let Some(NodeKind::CreateFunctionStmt(create)) = statement else {
            panic!("not a CREATE FUNCTION: {sql}");
        };
        let Some(NodeKind::FunctionParameter(parameter)) = &create.parameters[0].node else {
            panic!("no parameter");
        };
        render_type_name(parameter.arg_type.as_ref().expect("typed"), modifiers)
    }

    fn rendered(written: &str) -> String {
        render(written, Modifiers::Keep).expect("renders")
    }

    #[test]
    fn builtin_types_render_like_format_type() {
        for (written, expected) in [
            ("int", "integer"),
            ("integer", "integer"),
            ("int4", "integer"),
            ("pg_catalog.int4", "integer"),
            ("int8", "bigint"),
            ("bigint", "bigint"),
            ("smallint", "smallint"),
            ("int2", "smallint"),
            ("bool", "boolean"),
            ("boolean", "boolean"),
            ("float8", "double precision"),
            ("double precision", "double precision"),
            ("float", "double precision"),
            ("float4", "real"),
            ("real", "real"),
            ("varchar", "character varying"),
            ("varchar(20)", "character varying(20)"),
            ("character varying(20)", "character varying(20)"),
            ("char", "character"),
            ("char(3)", "character(3)"),
            ("bpchar", "character"),
            ("\"char\"", "\"char\""),
            ("timestamptz", "timestamp with time zone"),
            ("timestamp with time zone", "timestamp with time zone"),
            ("timestamp(3) with time zone", "timestamp(3) with time zone"),
            ("timestamp", "timestamp without time zone"),
            ("time with time zone", "time with time zone"),
            ("numeric(10,2)", "numeric(10,2)"),
            ("decimal(10, 2)", "numeric(10,2)"),
            ("numeric", "numeric"),
            ("interval", "interval"),
            ("interval(2)", "interval(2)"),
            ("interval day to second(3)", "interval day to second(3)"),
            ("bit varying(5)", "bit varying(5)"),
            ("text", "text"),
            ("pg_catalog.text", "text"),
            ("jsonb", "jsonb"),
            ("uuid", "uuid"),
            ("json", "json"),
            ("pg_catalog.\"char\"", "\"char\""),
        ] {
            assert_eq!(rendered(written), expected, "rendering of {written}");
        }
    }

    #[test]
    fn arrays_get_one_pair_of_brackets() {
        assert_eq!(rendered("text[]"), "text[]");
        assert_eq!(rendered("integer[][]"), "integer[]");
        assert_eq!(rendered("int ARRAY"), "integer[]");
        assert_eq!(rendered("varchar(3)[]"), "character varying(3)[]");
    }

    #[test]
    fn user_types_keep_their_qualification_and_needed_quotes() {
        assert_eq!(rendered("material"), "material");
        assert_eq!(rendered("lab.material"), "lab.material");
        assert_eq!(rendered("Lab.Material"), "lab.material");
        assert_eq!(rendered("\"My Type\""), "\"My Type\"");
        assert_eq!(rendered("\"Lab\".\"Material\""), "\"Lab\".\"Material\"");
        assert_eq!(rendered("public.\"user\""), "public.\"user\"");
        // A user type named like a built-in but in another schema is not the built-in.
        assert_eq!(rendered("lab.int4"), "lab.int4");
        assert_eq!(rendered("public.vector(3)"), "public.vector(3)");
    }

    #[test]
    fn modifiers_can_be_dropped_for_comparison() {
        assert_eq!(
            render("numeric(10,2)", Modifiers::Drop),
            Ok("numeric".to_owned())
        );
        assert_eq!(
            render("timestamp(3) with time zone", Modifiers::Drop),
            Ok("timestamp with time zone".to_owned())
        );
        assert_eq!(
            render("interval second(2)", Modifiers::Drop),
            Ok("interval".to_owned())
        );
    }

    #[test]
    fn a_columns_type_is_kept_as_written_for_the_agent_to_resolve() {
        assert_eq!(
            render("material.uid%TYPE", Modifiers::Keep),
            Ok("material.uid%TYPE".to_owned())
        );
        assert_eq!(
            render("App.\"Lot Table\".UID%type", Modifiers::Drop),
            Ok("app.\"Lot Table\".uid%TYPE".to_owned())
        );
        assert_eq!(
            render("a.b.c.d%TYPE", Modifiers::Keep),
            Err(TypeNameError::PercentType {
                written: "a.b.c.d".to_owned()
            })
        );
    }

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_identifier_if_needed("addarc"), "addarc");
        assert_eq!(quote_identifier_if_needed("name"), "name"); // unreserved keyword
        assert_eq!(quote_identifier_if_needed("select"), "\"select\"");
        assert_eq!(quote_identifier_if_needed("AddArc"), "\"AddArc\"");
        assert_eq!(quote_identifier_if_needed("9lives"), "\"9lives\"");
        assert_eq!(quote_identifier_if_needed("a\"b"), "\"a\"\"b\"");
    }
}
