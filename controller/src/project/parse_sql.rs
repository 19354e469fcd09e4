//! Reads one `procedures/*.sql` file with PostgreSQL's own parser
//! (libpg_query) into the routines it creates.

use pg_query::protobuf::{self, node::Node as NodeKind, FunctionParameterMode, KeywordKind, Token};
use pgrollout_shared::routine::{RoutineIdentity, RoutineKind, MAX_IDENTIFIER_BYTES};

use super::companion::{self, Companion};
use super::error::{ProjectError, ProjectWarning, SourceLocation};
use super::header_tokens;
use super::psql_scripts::{
    declared_by, is_search_path, on_line, psql_meta_command, statement_node, subsumed_drop,
    transaction_wrapper,
};
use super::routine_name::Signature;
use super::syntax_error::{is_comment, locate_error};
use super::type_names::{render_type_name, string_list, Modifiers};

/// One CREATE FUNCTION/PROCEDURE statement of a file.
#[derive(Clone, Debug)]
pub struct ParsedRoutine {
    pub identity: RoutineIdentity,
    /// The identity as compared with other routines and with names people
    /// write (argument types without modifiers).
    pub signature: Signature,
    pub kind: RoutineKind,
    /// The statement's source text, without surrounding comments or `;`.
    pub create_sql: String,
    /// Where the statement starts.
    pub defined_at: SourceLocation,
    /// What the offline parse could not judge (the server-side checks
    /// decide), e.g. a PL/pgSQL body using a type of another schema.
    pub warnings: Vec<ProjectWarning>,
    /// Where `create_sql` comes from in the file: what the parse cache
    /// keeps instead of the text (it rebuilds `create_sql` from the file).
    pub span: StatementSpan,
    /// The file's companion statements that act on this routine (GRANT,
    /// REVOKE, COMMENT ON, ALTER … OWNER TO; see `companion.rs`), as in the
    /// file, in file order; and where each is (what the parse cache keeps).
    pub companion_sql: Vec<String>,
    pub companion_spans: Vec<StatementSpan>,
}

/// The byte range of a statement in its file, and where ` OR REPLACE` was
/// spliced in (after the `CREATE` token) for a plain `CREATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatementSpan {
    pub start: usize,
    pub end: usize,
    pub or_replace_after: Option<usize>,
}

impl StatementSpan {
    /// The statement as it is applied; None when the span does not fit
    /// `text` (a cache entry that does not belong to it).
    pub fn create_sql(&self, text: &str) -> Option<String> {
        let statement = text.get(self.start..self.end)?;
        match self.or_replace_after {
            None => Some(statement.to_owned()),
            Some(after) => Some(format!(
                "{} OR REPLACE{}",
                text.get(self.start..after)?,
                text.get(after..self.end)?
            )),
        }
    }
}

/// Parses the text of the file at project-relative `path`. An unqualified
/// routine name belongs to `default_schema`, the schema the project (or the
/// file's sidecar) declares: the identity is always schema-qualified.
pub fn parse_procedure_file(
    path: &str,
    text: &str,
    default_schema: &str,
) -> Result<Vec<ParsedRoutine>, ProjectError> {
    parse_file(path, text, default_schema, Reader::TokensWhereExact)
}

/// How a file's CREATE statements are read: from the scanner's tokens where
/// `header_tokens` reads them exactly (PostgreSQL's raw parser still judges
/// the whole file), else from libpg_query's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    TokensWhereExact,
    /// Always the tree: what the token reader is held equal to in tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Tree,
}

pub(super) fn parse_file(
    path: &str,
    text: &str,
    default_schema: &str,
    reader: Reader,
) -> Result<Vec<ParsedRoutine>, ProjectError> {
    if let Some(offset) = text.find('\0') {
        return Err(ProjectError::Syntax {
            at: SourceLocation::at_offset(path, text, offset),
            message: "the file contains a NUL byte; remove it".to_owned(),
        });
    }
    if text.trim().is_empty() {
        // No statement (and pg_query's scan_tokens of no token at all builds
        // a slice from a null pointer).
        return Err(ProjectError::EmptyFile {
            path: path.to_owned(),
        });
    }
    // The scanner's tokens as they are, not round-tripped through protobuf.
    let scanned = pg_query::scan_tokens(text);
    let from_tokens = match (&scanned, reader) {
        (Ok(tokens), Reader::TokensWhereExact) => statements_from_tokens(text, tokens),
        _ => None,
    };
    let statements = match from_tokens {
        Some(statements) => statements,
        None => {
            let parsed =
                pg_query::parse(text, 0).map_err(|error| syntax_error(path, text, error))?;
            if parsed.protobuf.stmts.is_empty() {
                return Err(ProjectError::EmptyFile {
                    path: path.to_owned(),
                });
            }
            parsed.protobuf.stmts
        }
    };
    // The parse succeeded, so the scanner cannot fail on the same text.
    let tokens = scanned.map_err(|error| syntax_error(path, text, error))?;
    let file = SourceFile {
        path,
        text,
        tokens: &tokens,
        default_schema,
    };
    let mut routines = Vec::new();
    let mut companions = Vec::new();
    let wrapper = transaction_wrapper(&statements);
    for (position, raw) in statements.iter().enumerate() {
        let statement = statement_node(raw);
        if let Some(NodeKind::CreateFunctionStmt(create)) = statement {
            routines.push(file.routine(raw, create)?);
            continue;
        }
        if wrapper.is_some_and(|(begin, commit)| position == begin || position == commit) {
            // The file's own BEGIN … COMMIT: the deploy is one transaction.
            continue;
        }
        if let Some(NodeKind::VariableSetStmt(set)) = statement {
            if is_search_path(set) {
                // Declared the file's schema and path (the loader read it
                // before this parse); anywhere else it would be ambiguous.
                file.check_leading_search_path(raw, set, routines.is_empty())?;
                continue;
            }
        }
        let (start, end) = file.statement_span(raw);
        let at = SourceLocation::at_offset(path, text, start);
        let named = companion::read(statement, &file.statement_kind(start, end), &at)?;
        companions.push((start, end, at, named));
    }
    // Resolved once every CREATE of the file is known: a companion may
    // stand before the CREATE it names (the agent runs it after).
    let signatures: Vec<_> = routines
        .iter()
        .map(|r: &ParsedRoutine| (&r.signature, r.kind))
        .collect();
    let mut attached: Vec<(usize, StatementSpan)> = Vec::new();
    let mut dropped: Vec<(usize, ProjectWarning)> = Vec::new();
    let mut setting_warnings: Vec<ProjectWarning> = Vec::new();
    for (start, end, at, companion) in companions {
        let shown = shortened(&text[start..end]);
        let (named, is_drop) = match &companion {
            Companion::Attached(named) => (named, false),
            Companion::Dropped(named) => (named, true),
            Companion::SessionSetting(why) => {
                // Said once, at the file's first CREATE.
                if let (Some(why), Some(first)) = (why, routines.first()) {
                    setting_warnings.push(ProjectWarning {
                        at: first.defined_at.clone(),
                        message: format!("{shown}{} is not run: {why}", on_line(&at)),
                    });
                }
                continue;
            }
        };
        let indices = companion::resolve(named, is_drop, &signatures, default_schema, &shown, &at)?;
        for index in indices {
            if is_drop {
                dropped.push((index, subsumed_drop(&routines[index], &shown, start, &at)?));
                continue;
            }
            let span = StatementSpan {
                start,
                end,
                or_replace_after: None,
            };
            attached.push((index, span));
        }
    }
    for (index, warning) in dropped {
        routines[index].warnings.push(warning);
    }
    if let Some(first) = routines.first_mut() {
        first.warnings.extend(setting_warnings);
    }
    for (index, span) in attached {
        let routine = &mut routines[index];
        routine
            .companion_sql
            .push(text[span.start..span.end].to_owned());
        routine.companion_spans.push(span);
    }
    Ok(routines)
}

/// The file's statements read by `header_tokens`, when it reads them all
/// and PostgreSQL's raw parser accepts the file and splits it the same way.
pub(super) fn statements_from_tokens(
    text: &str,
    tokens: &[protobuf::ScanToken],
) -> Option<Vec<protobuf::RawStmt>> {
    header_tokens::read_creates(text, tokens).filter(|statements| {
        pg_query::split_with_parser(text).is_ok_and(|split| split.len() == statements.len())
    })
}

/// The start of a statement, on one line, for an error message.
pub(super) fn shortened(statement: &str) -> String {
    let one_line = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(72) {
        Some((cut, _)) => format!("`{}…`", &one_line[..cut]),
        None => format!("`{one_line}`"),
    }
}

pub(super) fn syntax_error(path: &str, text: &str, error: pg_query::Error) -> ProjectError {
    let message = match error {
        pg_query::Error::Parse(message) | pg_query::Error::Scan(message) => message,
        other => other.to_string(),
    };
    let offset = locate_error(text, &message, |prefix| match pg_query::parse(prefix, 0) {
        Err(pg_query::Error::Parse(message)) => Some(message),
        _ => None,
    });
    let message = match offset.and_then(|offset| psql_meta_command(text, offset)) {
        Some(command) => format!(
            "{message}: `{command}` is a psql meta-command, not SQL — pgrollout sends a file's \
             statements to the server itself; remove the line"
        ),
        None => message,
    };
    let at = offset.map_or_else(
        || SourceLocation::file(path),
        |offset| SourceLocation::at_offset(path, text, offset),
    );
    ProjectError::Syntax { at, message }
}

struct SourceFile<'a> {
    path: &'a str,
    text: &'a str,
    tokens: &'a [protobuf::ScanToken],
    default_schema: &'a str,
}

impl SourceFile<'_> {
    /// A `SET search_path` of the file: only before its first CREATE, and
    /// naming the schema the file's unqualified names were placed in.
    fn check_leading_search_path(
        &self,
        raw: &protobuf::RawStmt,
        set: &protobuf::VariableSetStmt,
        before_any_create: bool,
    ) -> Result<(), ProjectError> {
        let (start, _) = self.statement_span(raw);
        let at = SourceLocation::at_offset(self.path, self.text, start);
        let refuse = |reason: String| ProjectError::Companion {
            at: at.clone(),
            reason: format!("SET search_path: {reason}"),
        };
        if !before_any_create {
            return Err(refuse(
                "only at the file's top, before its first CREATE, where it declares the file's \
                 schema and path for every routine of it (or declare [schema] in pgrollout.toml \
                 or the file's sidecar)"
                    .to_owned(),
            ));
        }
        let declared = declared_by(set).map_err(refuse)?;
        if declared.schema != self.default_schema {
            return Err(refuse(format!(
                "it places the file's routines in {:?}, but they were read for {:?}",
                declared.schema, self.default_schema
            )));
        }
        Ok(())
    }

    fn location(&self, offset: i32) -> SourceLocation {
        match usize::try_from(offset) {
            Ok(offset) => SourceLocation::at_offset(self.path, self.text, offset),
            Err(_) => SourceLocation::file(self.path),
        }
    }

    fn routine(
        &self,
        raw: &protobuf::RawStmt,
        create: &protobuf::CreateFunctionStmt,
    ) -> Result<ParsedRoutine, ProjectError> {
        let (start, end) = self.statement_span(raw);
        let defined_at = SourceLocation::at_offset(self.path, self.text, start);
        let span = StatementSpan {
            start,
            end,
            or_replace_after: self.or_replace_splice(create, start, end),
        };
        let create_sql = span
            .create_sql(self.text)
            .unwrap_or_else(|| self.text[start..end].to_owned());
        let kind = if create.is_procedure {
            RoutineKind::Procedure
        } else {
            RoutineKind::Function
        };
        let (schema, name) = self.routine_name(create, &defined_at)?;
        let mut arg_types = Vec::new();
        let mut comparable_arg_types = Vec::new();
        for parameter in &create.parameters {
            let Some(NodeKind::FunctionParameter(parameter)) = &parameter.node else {
                return Err(unsupported(
                    &defined_at,
                    "unexpected parameter in the parse tree",
                ));
            };
            if !is_identity_argument(parameter.mode) {
                continue;
            }
            let at = self.location(parameter.location);
            let type_name = parameter
                .arg_type
                .as_ref()
                .ok_or_else(|| unsupported(&at, "parameter without a type"))?;
            let render = |modifiers| {
                render_type_name(type_name, modifiers).map_err(|error| ProjectError::Unsupported {
                    at: self.location(type_name.location),
                    reason: error.describe(),
                })
            };
            arg_types.push(render(Modifiers::Keep)?);
            comparable_arg_types.push(render(Modifiers::Drop)?);
        }
        let mut warnings = Vec::new();
        match language(create).as_deref() {
            Some("plpgsql") => {
                if let Some(warning) = self.check_plpgsql_body(create, start, end)? {
                    warnings.push(warning);
                }
            }
            Some("sql") => self.check_sql_body(create)?,
            _ => {}
        }
        Ok(ParsedRoutine {
            signature: Signature {
                schema: schema.clone(),
                name: name.clone(),
                arg_types: comparable_arg_types,
            },
            identity: RoutineIdentity {
                schema,
                name,
                arg_types,
            },
            kind,
            create_sql,
            defined_at,
            warnings,
            span,
            companion_sql: Vec::new(),
            companion_spans: Vec::new(),
        })
    }

    /// Where the statement as applied differs from the file: a plain
    /// `CREATE FUNCTION|PROCEDURE` becomes `CREATE OR REPLACE …`, spliced
    /// in after the `CREATE` token (returned), so the file can be deployed
    /// again once the routine exists (issue 15) and the definition is
    /// otherwise the file's, byte for byte.
    fn or_replace_splice(
        &self,
        create: &protobuf::CreateFunctionStmt,
        start: usize,
        end: usize,
    ) -> Option<usize> {
        if create.replace {
            return None;
        }
        let create_token = self.tokens.iter().find(|token| {
            usize::try_from(token.start).ok() == Some(start) && token.token == Token::Create as i32
        })?;
        usize::try_from(create_token.end)
            .ok()
            .filter(|&after| after > start && after <= end)
    }

    /// The statement without leading/trailing comments and its `;`:
    /// from its first token to the end of its last one. `stmt_len` 0 means
    /// "to the end of the text"; both are byte offsets.
    fn statement_span(&self, raw: &protobuf::RawStmt) -> (usize, usize) {
        let location = usize::try_from(raw.stmt_location).unwrap_or(0);
        let end = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => self.text.len(),
            Ok(length) => (location + length).min(self.text.len()),
        };
        let mut inside = self.tokens.iter().filter(|token| {
            usize::try_from(token.start).is_ok_and(|start| start >= location && start < end)
                && !is_comment(token.token)
                && token.token != Token::Ascii59 as i32
        });
        let first = inside.next();
        let last = inside.next_back().or(first);
        match (first, last) {
            (Some(first), Some(last)) => (
                usize::try_from(first.start).unwrap_or(location),
                usize::try_from(last.end).unwrap_or(end),
            ),
            _ => (location, end),
        }
    }

    /// A readable name for a statement that is not a CREATE FUNCTION or
    /// PROCEDURE: its leading keywords, e.g. `DROP TABLE IF EXISTS`.
    fn statement_kind(&self, start: usize, end: usize) -> String {
        let keywords: Vec<String> = self
            .tokens
            .iter()
            .filter(|token| {
                usize::try_from(token.start).is_ok_and(|s| s >= start && s < end)
                    && !is_comment(token.token)
            })
            .take_while(|token| token.keyword_kind != KeywordKind::NoKeyword as i32)
            .take(5)
            .filter_map(|token| {
                let start = usize::try_from(token.start).ok()?;
                let end = usize::try_from(token.end).ok()?;
                Some(self.text.get(start..end)?.to_ascii_uppercase())
            })
            .collect();
        // A data statement is named by its verb; a DDL statement also by
        // the kind of object it touches.
        let words = match keywords.first().map(String::as_str) {
            Some("CREATE" | "DROP" | "ALTER" | "COMMENT") => keywords.len(),
            _ => 1,
        };
        match keywords.get(..words) {
            Some(words) if !words.is_empty() => words.join(" "),
            _ => "this".to_owned(),
        }
    }

    fn routine_name(
        &self,
        create: &protobuf::CreateFunctionStmt,
        at: &SourceLocation,
    ) -> Result<(String, String), ProjectError> {
        let names = string_list(&create.funcname)
            .ok_or_else(|| unsupported(at, "unexpected routine name in the parse tree"))?;
        let (schema, name) = match names.as_slice() {
            [name] => (self.default_schema, *name),
            [schema, name] => (*schema, *name),
            _ => {
                return Err(unsupported(
                    at,
                    "a routine name may have a schema but no database: write schema.name",
                ))
            }
        };
        for identifier in [schema, name] {
            if identifier.len() > MAX_IDENTIFIER_BYTES {
                return Err(unsupported(
                    at,
                    &format!(
                        "{identifier:?} is longer than {MAX_IDENTIFIER_BYTES} bytes and PostgreSQL \
                         would truncate it; shorten it"
                    ),
                ));
            }
        }
        Ok((schema.to_owned(), name.to_owned()))
    }

    /// Compiles a PL/pgSQL body with PostgreSQL's PL/pgSQL parser, so a
    /// syntax error in it is caught before anything is deployed.
    fn check_plpgsql_body(
        &self,
        create: &protobuf::CreateFunctionStmt,
        start: usize,
        end: usize,
    ) -> Result<Option<ProjectWarning>, ProjectError> {
        let statement = self.statement_for_plpgsql_check(create, start, end);
        let message = match pg_query::parse_plpgsql(&statement) {
            // The body compiled; libpg_query then failed to serialise the
            // compiled function to JSON (it does for trigger functions),
            // which says nothing about the source.
            Ok(_) | Err(pg_query::Error::InvalidJson(_)) => return Ok(None),
            Err(pg_query::Error::Parse(message)) => message,
            Err(other) => other.to_string(),
        };
        if is_offline_limitation(&message) {
            return Ok(Some(ProjectWarning {
                at: SourceLocation::at_offset(self.path, self.text, start),
                message: offline_limitation_warning(&message),
            }));
        }
        let offset = self
            .body_error_offset(create, &statement, start, &message)
            .unwrap_or(start);
        Err(ProjectError::Syntax {
            at: SourceLocation::at_offset(self.path, self.text, offset),
            message: format!("{message} (in the PL/pgSQL body)"),
        })
    }

    /// Parses a SQL-language string body (PostgreSQL parses it at CREATE
    /// too), so a syntax error in it is reported at its file position.
    /// `BEGIN ATOMIC` and `RETURN` bodies were parsed with the statement.
    fn check_sql_body(&self, create: &protobuf::CreateFunctionStmt) -> Result<(), ProjectError> {
        if create.sql_body.is_some() {
            return Ok(());
        }
        let Some(body) = BodyLiteral::find(self, create) else {
            return Ok(());
        };
        let source = &self.text[body.content_start..body.content_end];
        let decoded = match body.quoting {
            Quoting::Dollar(_) => source.to_owned(),
            Quoting::Single => source.replace("''", "'"),
        };
        // PostgreSQL's raw parser, as `parse` runs it, without serialising
        // the tree nobody reads here: that serialisation (libpg_query's upb
        // encoder) was a quarter of a cold CLI run.
        let message = match pg_query::split_with_parser(&decoded) {
            Ok(_) => return Ok(()),
            Err(pg_query::Error::Split(message)) => message,
            // A body that cannot even be handed to the parser (a NUL byte)
            // is left to the server.
            Err(_) => return Ok(()),
        };
        let offset = locate_error(&decoded, &message, |prefix| {
            match pg_query::parse(prefix, 0) {
                Err(pg_query::Error::Parse(message)) => Some(message),
                _ => None,
            }
        })
        .map(|in_decoded| {
            body.content_start
                + match body.quoting {
                    Quoting::Dollar(_) => in_decoded,
                    Quoting::Single => source_offset_of_decoded(source, in_decoded),
                }
        })
        .unwrap_or(body.content_start);
        Err(ProjectError::Syntax {
            at: SourceLocation::at_offset(self.path, self.text, offset),
            message: format!("{message} (in the SQL body)"),
        })
    }

    /// The statement as handed to the PL/pgSQL compiler: byte for byte the
    /// source (so offsets map back), except that `VARIADIC` markers are
    /// blanked. libpg_query compiles without a catalog and so cannot see
    /// that `int[]` is an array; it would refuse every `VARIADIC xs int[]`
    /// with "VARIADIC parameter must be an array". The body does not
    /// depend on the marker.
    fn statement_for_plpgsql_check(
        &self,
        create: &protobuf::CreateFunctionStmt,
        start: usize,
        end: usize,
    ) -> String {
        let mut statement = self.text.as_bytes()[start..end].to_vec();
        for parameter in &create.parameters {
            let Some(NodeKind::FunctionParameter(parameter)) = &parameter.node else {
                continue;
            };
            if parameter.mode != FunctionParameterMode::FuncParamVariadic as i32 {
                continue;
            }
            let (Ok(from), Some(Ok(to))) = (
                usize::try_from(parameter.location),
                parameter
                    .arg_type
                    .as_ref()
                    .map(|t| usize::try_from(t.location)),
            ) else {
                continue;
            };
            for token in self
                .tokens
                .iter()
                .filter(|token| token.token == Token::Variadic as i32)
            {
                let (Ok(token_start), Ok(token_end)) =
                    (usize::try_from(token.start), usize::try_from(token.end))
                else {
                    continue;
                };
                if token_start >= from
                    && token_end <= to
                    && token_start >= start
                    && token_end <= end
                {
                    statement[token_start - start..token_end - start].fill(b' ');
                }
            }
        }
        // Only ASCII keyword bytes were replaced, by ASCII spaces.
        String::from_utf8(statement).unwrap_or_else(|_| self.text[start..end].to_owned())
    }

    /// The file offset of a PL/pgSQL error, found in the body literal.
    /// `statement` is the checked text of the statement starting at `start`.
    fn body_error_offset(
        &self,
        create: &protobuf::CreateFunctionStmt,
        statement: &str,
        start: usize,
        message: &str,
    ) -> Option<usize> {
        let body = BodyLiteral::find(self, create)?;
        let source = &self.text[body.content_start..body.content_end];
        match &body.quoting {
            Quoting::Dollar(tag) => {
                let before_body = statement.get(..body.content_start - start)?;
                let after_body = statement.get(body.content_end + tag.len() - start..)?;
                let offset_in_body = locate_error(source, message, |body_prefix| {
                    // The statement with its body cut after the candidate.
                    let cut = format!("{before_body}{body_prefix}{tag}{after_body}");
                    match pg_query::parse_plpgsql(&cut) {
                        Err(pg_query::Error::Parse(message)) => Some(message),
                        _ => None,
                    }
                })?;
                Some(body.content_start + offset_in_body)
            }
            Quoting::Single => {
                // The parser saw the body with '' undoubled; find the error
                // there, then map back to the source.
                let decoded = source.replace("''", "'");
                let offset_in_decoded = locate_error(&decoded, message, |_| None)?;
                Some(body.content_start + source_offset_of_decoded(source, offset_in_decoded))
            }
        }
    }
}

/// Where the body string of a CREATE statement sits in the file.
struct BodyLiteral {
    content_start: usize,
    content_end: usize,
    quoting: Quoting,
}

enum Quoting {
    /// `$tag$...$tag$`, the tag including both dollar signs.
    Dollar(String),
    /// `'...'` with standard-conforming strings: only `''` is special.
    Single,
}

impl BodyLiteral {
    fn find(file: &SourceFile<'_>, create: &protobuf::CreateFunctionStmt) -> Option<BodyLiteral> {
        // The `AS` option records where its string constant starts.
        let literal_start = create
            .options
            .iter()
            .find_map(|option| match &option.node {
                Some(NodeKind::DefElem(element)) if element.defname == "as" => {
                    usize::try_from(element.arg_location).ok()
                }
                _ => None,
            })?;
        let token = file
            .tokens
            .iter()
            .find(|token| usize::try_from(token.start).ok() == Some(literal_start))?;
        let literal = file
            .text
            .get(literal_start..usize::try_from(token.end).ok()?)?;
        if let Some(after_dollar) = literal.strip_prefix('$') {
            let tag_end = after_dollar.find('$')? + 2;
            let tag = &literal[..tag_end];
            let content = literal.strip_prefix(tag)?.strip_suffix(tag)?;
            Some(BodyLiteral {
                content_start: literal_start + tag.len(),
                content_end: literal_start + tag.len() + content.len(),
                quoting: Quoting::Dollar(tag.to_owned()),
            })
        } else if literal.starts_with('\'') && literal.len() >= 2 {
            Some(BodyLiteral {
                content_start: literal_start + 1,
                content_end: literal_start + literal.len() - 1,
                quoting: Quoting::Single,
            })
        } else {
            // E'...' and U&'...' bodies: escapes make offsets unreliable.
            None
        }
    }
}

/// Maps an offset in `source` with `''` undoubled back to `source`.
fn source_offset_of_decoded(source: &str, decoded_offset: usize) -> usize {
    let bytes = source.as_bytes();
    let (mut source_offset, mut decoded) = (0, 0);
    while decoded < decoded_offset && source_offset < bytes.len() {
        let doubled_quote =
            bytes[source_offset] == b'\'' && bytes.get(source_offset + 1) == Some(&b'\'');
        source_offset += if doubled_quote { 2 } else { 1 };
        decoded += 1;
    }
    source_offset
}

/// IN, INOUT and VARIADIC arguments (and those with no mode written) make
/// up the identity. OUT and TABLE columns do not — for procedures too:
/// PostgreSQL 15 creates `p(a int, OUT b int)` as `p(integer)`, and
/// `to_regprocedure('p(integer, integer)')` does not find it.
fn is_identity_argument(mode: i32) -> bool {
    !matches!(
        FunctionParameterMode::try_from(mode),
        Ok(FunctionParameterMode::FuncParamOut | FunctionParameterMode::FuncParamTable)
    )
}

/// The routine's language, lower case (PostgreSQL folds it).
fn language(create: &protobuf::CreateFunctionStmt) -> Option<String> {
    create.options.iter().find_map(|option| match &option.node {
        Some(NodeKind::DefElem(element)) if element.defname == "language" => {
            match element.arg.as_ref().and_then(|arg| arg.node.as_ref()) {
                Some(NodeKind::String(language)) => Some(language.sval.to_ascii_lowercase()),
                _ => None,
            }
        }
        _ => None,
    })
}

/// libpg_query compiles PL/pgSQL without a catalog, and says so when a body
/// needs one: "Not implemented (LookupExplicitNamespace only supports
/// pg_catalog and public)" for a type of another schema. That is no verdict
/// on the body.
pub fn is_offline_limitation(message: &str) -> bool {
    message.contains("Not implemented") || message.contains("LookupExplicitNamespace")
}

/// What an offline limitation is, in words: libpg_query's bare "Not
/// implemented" is its catalog lookup of a type (a `%TYPE`, `%ROWTYPE`).
pub fn offline_limitation_reason(message: &str) -> &str {
    if message.trim() == "Not implemented" {
        "it has no catalog to look up a type such as `items.id%TYPE` or `items%ROWTYPE`"
    } else {
        message
    }
}

pub fn offline_limitation_warning(message: &str) -> String {
    let message = offline_limitation_reason(message);
    format!(
        "the offline PL/pgSQL parse cannot judge this body ({message}); the server-side checks \
         decide (the dry run of `pgrollout check`, plpgsql_check, and CREATE itself)"
    )
}

fn unsupported(at: &SourceLocation, reason: &str) -> ProjectError {
    ProjectError::Unsupported {
        at: at.clone(),
        reason: reason.to_owned(),
    }
}
