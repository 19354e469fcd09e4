//! The CREATE FUNCTION/PROCEDURE statements of a file read from the
//! scanner's tokens, for the shapes most code is written in, so a cold
//! parse skips libpg_query's protobuf output.
//!
//! `pg_query::parse` hands its tree over as protobuf: upb's encoder walks
//! every one of the ~270 node kinds for each node, and prost decodes it
//! again. On a thousand-routine project that was two fifths of reading the
//! files (issue 15 item 9). This reader builds the same
//! `CreateFunctionStmt` the grammar would — the name, each parameter's
//! mode, name and type, the language and where the body literal is — from
//! the tokens, and `parse_sql` goes on with it exactly as with the tree.
//!
//! It is an optimisation, never a second parser: PostgreSQL's raw parser
//! still judges the whole file (`split_with_parser`, which builds the tree
//! but outputs nothing), and any statement this reader does not know exactly
//! — a companion statement, a type with modifiers, `%TYPE`, `SETOF`,
//! `BEGIN ATOMIC`, a keyword used as a name, an unusual literal — sends the
//! whole file down the tree path. `header_tokens_tests.rs` holds both paths
//! equal on every shape it accepts.

use pg_query::protobuf::{
    self, node::Node as NodeKind, FunctionParameterMode, KeywordKind, ScanToken, Token,
};

use super::syntax_error::is_comment;

/// The file's statements, each a CREATE FUNCTION or PROCEDURE read from
/// `tokens` (the scanner's, of `text`), placed as the grammar places its
/// raw statements; `None` when any statement is of a shape this reader
/// leaves to the tree.
pub fn read_creates(text: &str, tokens: &[ScanToken]) -> Option<Vec<protobuf::RawStmt>> {
    let mut statements = Vec::new();
    // The grammar starts the first statement at 0 and each later one right
    // after the `;` before it; a statement's length ends at its `;` (0: to
    // the end of the text).
    let mut location = 0usize;
    let mut current: Vec<&ScanToken> = Vec::new();
    for token in tokens {
        if is_comment(token.token) {
            continue;
        }
        if token.token == Token::Ascii59 as i32 {
            let semicolon = offset(token.start)?;
            if !current.is_empty() {
                let stmt_len = i32::try_from(semicolon - location).ok()?;
                statements.push(raw_statement(text, &current, location, stmt_len)?);
            }
            location = semicolon + 1;
            current.clear();
            continue;
        }
        current.push(token);
    }
    if !current.is_empty() {
        statements.push(raw_statement(text, &current, location, 0)?);
    }
    (!statements.is_empty()).then_some(statements)
}

fn raw_statement(
    text: &str,
    tokens: &[&ScanToken],
    location: usize,
    stmt_len: i32,
) -> Option<protobuf::RawStmt> {
    let create = Header { text, tokens }.create()?;
    Some(protobuf::RawStmt {
        stmt: Some(Box::new(node(NodeKind::CreateFunctionStmt(Box::new(
            create,
        ))))),
        stmt_location: i32::try_from(location).ok()?,
        stmt_len,
    })
}

/// One statement's tokens, comments left out.
struct Header<'a> {
    text: &'a str,
    tokens: &'a [&'a ScanToken],
}

impl Header<'_> {
    fn create(&self) -> Option<protobuf::CreateFunctionStmt> {
        let mut at = 0;
        self.expect(&mut at, Token::Create)?;
        let replace = self.is(at, Token::Or);
        if replace {
            at += 1;
            self.expect(&mut at, Token::Replace)?;
        }
        let is_procedure = match self.kind(at)? {
            kind if kind == Token::Function as i32 => false,
            kind if kind == Token::Procedure as i32 => true,
            _ => return None,
        };
        at += 1;
        let mut funcname = vec![self.identifier(at)?];
        at += 1;
        if self.is(at, Token::Ascii46) {
            funcname.push(self.identifier(at + 1)?);
            at += 2;
        }
        self.expect(&mut at, Token::Ascii40)?;
        let close = self.closing_parenthesis(at - 1)?;
        let parameters = self
            .top_level_commas(at, close)
            .into_iter()
            .map(|(from, to)| self.parameter(from, to))
            .collect::<Option<Vec<_>>>()?;
        let options = self.options(close + 1)?;
        Some(protobuf::CreateFunctionStmt {
            is_procedure,
            replace,
            funcname: funcname.into_iter().map(string_node).collect(),
            parameters,
            return_type: None,
            options,
            sql_body: None,
        })
    }

    /// One parameter, tokens `from..to`: `[mode] [name] type [DEFAULT|= …]`.
    fn parameter(&self, from: usize, to: usize) -> Option<protobuf::Node> {
        let to = (from..to)
            .find(|&i| self.is(i, Token::Default) || self.is(i, Token::Ascii61))
            .unwrap_or(to);
        let mut at = from;
        let mode = match self.kind(at)? {
            kind if kind == Token::InP as i32 => FunctionParameterMode::FuncParamIn,
            kind if kind == Token::OutP as i32 => FunctionParameterMode::FuncParamOut,
            kind if kind == Token::Inout as i32 => FunctionParameterMode::FuncParamInout,
            kind if kind == Token::Variadic as i32 => FunctionParameterMode::FuncParamVariadic,
            _ => FunctionParameterMode::FuncParamDefault,
        };
        if mode != FunctionParameterMode::FuncParamDefault {
            at += 1;
        }
        // A name, when a type follows it; else the tokens are the type.
        // Types that start with a keyword (`double precision`) cannot start
        // with a name: a name is never such a keyword.
        let (name, type_from) = match self.type_name(at + 1, to) {
            Some(_) if self.identifier(at).is_some() => (self.identifier(at)?, at + 1),
            _ => (String::new(), at),
        };
        let arg_type = self.type_name(type_from, to)?;
        Some(node(NodeKind::FunctionParameter(Box::new(
            protobuf::FunctionParameter {
                name,
                arg_type: Some(arg_type),
                mode: mode as i32,
                defexpr: None,
                location: self.location(from)?,
            },
        ))))
    }

    /// The type spelled by exactly the tokens `from..to`: a name of one or
    /// two parts, or a built-in SQL type of a few keywords, without
    /// modifiers, then `[]` or `[n]` suffixes.
    fn type_name(&self, from: usize, to: usize) -> Option<protobuf::TypeName> {
        (from < to).then_some(())?;
        let (names, mut at) = match self.sql_standard_type(from, to) {
            Some((internal, after)) => (
                vec![
                    string_node("pg_catalog".to_owned()),
                    string_node(internal.to_owned()),
                ],
                after,
            ),
            None => {
                let mut names = vec![string_node(self.identifier(from)?)];
                let mut at = from + 1;
                if at + 1 < to && self.is(at, Token::Ascii46) {
                    names.push(string_node(self.identifier(at + 1)?));
                    at += 2;
                }
                (names, at)
            }
        };
        let mut array_bounds = Vec::new();
        while at < to {
            self.expect(&mut at, Token::Ascii91)?;
            let bound = if self.is(at, Token::Iconst) {
                at += 1;
                self.token_text(at - 1)?.parse().ok()?
            } else {
                -1
            };
            self.expect(&mut at, Token::Ascii93)?;
            array_bounds.push(node(NodeKind::Integer(protobuf::Integer { ival: bound })));
        }
        (at == to).then_some(())?;
        Some(protobuf::TypeName {
            names,
            type_oid: 0,
            setof: false,
            pct_type: false,
            typmods: Vec::new(),
            typemod: -1,
            array_bounds,
            location: self.location(from)?,
        })
    }

    /// The built-in SQL types the grammar spells with keywords, without
    /// modifiers (those with a length, precision or field list, and
    /// `char`/`bit`, which carry an implicit one, are the tree's): the
    /// internal name and the token after the type.
    fn sql_standard_type(&self, from: usize, to: usize) -> Option<(&'static str, usize)> {
        let kind = self.kind(from)?;
        let next_is = |token: Token| from + 1 < to && self.is(from + 1, token);
        let single = [
            (Token::IntP, "int4"),
            (Token::Integer, "int4"),
            (Token::Smallint, "int2"),
            (Token::Bigint, "int8"),
            (Token::Real, "float4"),
            (Token::BooleanP, "bool"),
            (Token::Varchar, "varchar"),
            (Token::Numeric, "numeric"),
            (Token::DecimalP, "numeric"),
            (Token::Dec, "numeric"),
            (Token::FloatP, "float8"),
        ];
        if let Some((_, internal)) = single.iter().find(|(token, _)| kind == *token as i32) {
            return (!next_is(Token::Ascii40)).then_some((internal, from + 1));
        }
        if kind == Token::DoubleP as i32 && next_is(Token::Precision) {
            return Some(("float8", from + 2));
        }
        if (kind == Token::Character as i32 || kind == Token::CharP as i32)
            && next_is(Token::Varying)
        {
            return (!(from + 2 < to && self.is(from + 2, Token::Ascii40)))
                .then_some(("varchar", from + 2));
        }
        if kind == Token::Timestamp as i32 || kind == Token::Time as i32 {
            let zoned = if kind == Token::Timestamp as i32 {
                ("timestamptz", "timestamp")
            } else {
                ("timetz", "time")
            };
            let zone_after = |first: Token| {
                next_is(first)
                    && from + 3 < to
                    && self.is(from + 2, Token::Time)
                    && self.is(from + 3, Token::Zone)
            };
            return if zone_after(Token::With) {
                Some((zoned.0, from + 4))
            } else if zone_after(Token::Without) {
                Some((zoned.1, from + 4))
            } else if next_is(Token::Ascii40) || next_is(Token::With) || next_is(Token::Without) {
                None
            } else {
                Some((zoned.1, from + 1))
            };
        }
        None
    }

    /// The options after the parameters: only where `LANGUAGE` and the
    /// `AS` literal are matters here; a body the grammar keeps as a tree
    /// (`BEGIN ATOMIC`, `RETURN`) or a second `AS` literal (C functions)
    /// is the tree's.
    fn options(&self, from: usize) -> Option<Vec<protobuf::Node>> {
        let mut depth = 0i32;
        let mut language = None;
        let mut body = None;
        for at in from..self.tokens.len() {
            let kind = self.kind(at)?;
            depth += self.nesting(at);
            if depth != 0 {
                continue;
            }
            if kind == Token::BeginP as i32 || kind == Token::Return as i32 {
                return None;
            }
            if kind == Token::Language as i32 {
                language.is_none().then_some(())?;
                language = Some(self.language(at + 1)?);
            }
            if kind == Token::As as i32 {
                body.is_none().then_some(())?;
                body = Some(at + 1);
                self.is(at + 1, Token::Sconst).then_some(())?;
                // `AS 'obj_file', 'link_symbol'`.
                (!self.is(at + 2, Token::Ascii44)).then_some(())?;
            }
        }
        let mut options = Vec::new();
        // The grammar keeps options in the order written; only the two
        // read here are looked up, by name.
        if let Some(at) = body {
            options.push(def_elem("as", None, self.location(at)?));
        }
        if let Some(language) = language {
            options.push(def_elem(
                "language",
                Some(string_node(language)),
                self.location(from)?,
            ));
        }
        Some(options)
    }

    /// `LANGUAGE name`: a name or a plain `'string'`.
    fn language(&self, at: usize) -> Option<String> {
        if self.is(at, Token::Sconst) {
            let text = self.token_text(at)?;
            let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
            return (!inner.contains(['\'', '\\'])).then(|| inner.to_owned());
        }
        self.identifier(at)
    }

    /// A name as the grammar reads it: an identifier (folded to lower case
    /// unless quoted) or an unreserved keyword. Anything else, and names
    /// PostgreSQL would truncate, are the tree's.
    fn identifier(&self, at: usize) -> Option<String> {
        let token = self.tokens.get(at)?;
        let text = self.token_text(at)?;
        let name = if token.token == Token::Ident as i32 {
            match text.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"')?.replace("\"\"", "\""),
                None => text.to_ascii_lowercase(),
            }
        } else if token.keyword_kind == KeywordKind::UnreservedKeyword as i32
            && !UNRESERVED_WITH_MEANING.contains(&token.token)
        {
            text.to_ascii_lowercase()
        } else {
            return None;
        };
        (!name.is_empty() && name.len() <= pgrollout_shared::routine::MAX_IDENTIFIER_BYTES)
            .then_some(name)
    }

    fn closing_parenthesis(&self, open: usize) -> Option<usize> {
        let mut depth = 0;
        (open..self.tokens.len()).find(|&at| {
            depth += self.nesting(at);
            depth == 0
        })
    }

    /// The ranges between the commas at depth 0 of `from..to`; none for
    /// an empty list.
    fn top_level_commas(&self, from: usize, to: usize) -> Vec<(usize, usize)> {
        if from == to {
            return Vec::new();
        }
        let mut ranges = Vec::new();
        let (mut depth, mut start) = (0, from);
        for at in from..to {
            depth += self.nesting(at);
            if depth == 0 && self.is(at, Token::Ascii44) {
                ranges.push((start, at));
                start = at + 1;
            }
        }
        ranges.push((start, to));
        ranges
    }

    /// How the token at `at` changes the depth of parentheses and
    /// brackets: +1 opens, -1 closes, 0 neither.
    fn nesting(&self, at: usize) -> i32 {
        match self.kind(at) {
            Some(kind) if kind == Token::Ascii40 as i32 || kind == Token::Ascii91 as i32 => 1,
            Some(kind) if kind == Token::Ascii41 as i32 || kind == Token::Ascii93 as i32 => -1,
            _ => 0,
        }
    }

    fn kind(&self, at: usize) -> Option<i32> {
        self.tokens.get(at).map(|token| token.token)
    }

    fn is(&self, at: usize, token: Token) -> bool {
        self.kind(at) == Some(token as i32)
    }

    fn expect(&self, at: &mut usize, token: Token) -> Option<()> {
        self.is(*at, token).then(|| *at += 1)
    }

    fn token_text(&self, at: usize) -> Option<&str> {
        let token = self.tokens.get(at)?;
        self.text.get(offset(token.start)?..offset(token.end)?)
    }

    fn location(&self, at: usize) -> Option<i32> {
        self.tokens.get(at).map(|token| token.start)
    }
}

/// Unreserved keywords the grammar gives a meaning of their own where a
/// name or a type may stand (`json` reads as `pg_catalog.json`, a mode
/// keyword as the mode): never read as a plain name here.
const UNRESERVED_WITH_MEANING: [i32; 5] = [
    Token::Json as i32,
    Token::InP as i32,
    Token::OutP as i32,
    Token::Inout as i32,
    Token::Setof as i32,
];

fn offset(position: i32) -> Option<usize> {
    usize::try_from(position).ok()
}

fn node(kind: NodeKind) -> protobuf::Node {
    protobuf::Node { node: Some(kind) }
}

fn string_node(sval: String) -> protobuf::Node {
    node(NodeKind::String(protobuf::String { sval }))
}

fn def_elem(name: &str, arg: Option<protobuf::Node>, arg_location: i32) -> protobuf::Node {
    node(NodeKind::DefElem(Box::new(protobuf::DefElem {
        defnamespace: String::new(),
        defname: name.to_owned(),
        arg: arg.map(Box::new),
        defaction: protobuf::DefElemAction::DefelemUnspec as i32,
        location: arg_location,
        arg_location,
    })))
}
