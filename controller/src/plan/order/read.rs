//! Reading what a routine calls: its CREATE statement parsed with
//! PostgreSQL's own parser, SQL bodies, PL/pgSQL bodies and defaults.

use pg_query::protobuf::{self, node::Node as NodeKind, FunctionParameterMode};
use pgrollout_shared::routine::Routine;
use serde_json::Value;

use super::arg_types::ArgType;
use super::walk::collect_calls;
use super::DependencyReason;

/// What ordering needs to know of one routine, read from its CREATE.
#[derive(Clone, Default)]
pub(super) struct Shape {
    pub(super) arity: Arity,
    /// The types of the parameters that make up its identity, to match a
    /// declared `name(type, ...)`.
    pub(super) input_types: Vec<TypeKey>,
    /// The identity parameters in order, each with its name (empty when
    /// none is written) and type, to know the type of `$n` or of a
    /// parameter's name passed on to a call.
    pub(super) parameters: Vec<(String, Option<TypeKey>)>,
    /// Schemas an unqualified call from this routine looks in first.
    pub(super) search_path: Vec<String>,
    pub(super) calls: Vec<Call>,
    pub(super) not_analysed: Option<String>,
}

/// How many arguments a call may pass.
#[derive(Clone, Default)]
pub(super) struct Arity {
    pub(super) min: usize,
    /// None with a VARIADIC parameter.
    pub(super) max: Option<usize>,
}

impl Arity {
    pub(super) fn accepts(&self, count: Option<usize>) -> bool {
        count.is_none_or(|count| count >= self.min && self.max.is_none_or(|max| count <= max))
    }
}

/// A type as the parser wrote it, modifiers left out (`int` and `integer`
/// both read as `int4`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TypeKey {
    pub(super) names: Vec<String>,
    pub(super) array_dimensions: usize,
    pub(super) percent_type: bool,
}

impl TypeKey {
    pub(super) fn of(type_name: &protobuf::TypeName) -> Option<TypeKey> {
        let mut names = string_list(&type_name.names)?;
        if names.len() > 1 && names[0] == "pg_catalog" {
            names.remove(0);
        }
        Some(TypeKey {
            names,
            array_dimensions: type_name.array_bounds.len(),
            percent_type: type_name.pct_type,
        })
    }
}

/// One call found in a routine's text.
#[derive(Clone, Debug)]
pub(super) struct Call {
    pub(super) schema: Option<String>,
    pub(super) name: String,
    /// The arguments' types, as far as known; None when not even their
    /// number is known: any overload may be meant.
    pub(super) arguments: Option<Vec<ArgType>>,
    pub(super) reason: DependencyReason,
}

pub(super) fn read_shape(routine: &Routine) -> Result<Shape, String> {
    if routine.retire.is_some() {
        // Retired: no statement, nothing it calls; the plan holds nothing else.
        return Ok(Shape::default());
    }
    let parsed = pg_query::parse(&routine.create_sql, 0).map_err(describe)?;
    let create = match parsed.protobuf.stmts.as_slice() {
        [raw] => match raw.stmt.as_ref().and_then(|stmt| stmt.node.as_ref()) {
            Some(NodeKind::CreateFunctionStmt(create)) => Some(create),
            _ => None,
        },
        _ => None,
    }
    .ok_or("expected one CREATE FUNCTION or CREATE PROCEDURE statement")?;

    let parameters: Vec<&protobuf::FunctionParameter> = create
        .parameters
        .iter()
        .filter_map(|node| match &node.node {
            Some(NodeKind::FunctionParameter(parameter)) => Some(parameter.as_ref()),
            _ => None,
        })
        .collect();
    let mut shape = Shape {
        arity: arity(&parameters, create.is_procedure),
        input_types: parameters
            .iter()
            .filter(|p| is_input(p.mode))
            .filter_map(|p| TypeKey::of(p.arg_type.as_ref()?))
            .collect(),
        parameters: parameters
            .iter()
            .filter(|p| is_input(p.mode))
            .map(|p| (p.name.clone(), p.arg_type.as_ref().and_then(TypeKey::of)))
            .collect(),
        // Its own `SET search_path`, else the path the project declares for
        // it (which its CREATE runs with), else its schema and `public`.
        search_path: search_path(create).unwrap_or_else(|| {
            if routine.search_path.is_empty() {
                vec![routine.identity.schema.clone(), "public".to_owned()]
            } else {
                routine.search_path.clone()
            }
        }),
        ..Shape::default()
    };
    for default in parameters.iter().filter_map(|p| p.defexpr.as_deref()) {
        collect_calls(
            default,
            DependencyReason::CalledFromDefault,
            &mut shape.calls,
        )?;
    }
    if let Some(body) = &create.sql_body {
        // BEGIN ATOMIC ... END or RETURN expr: already parsed with the rest.
        collect_calls(body, DependencyReason::CalledFromSql, &mut shape.calls)?;
        return Ok(shape);
    }
    match option_string(create, "language")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("sql") => {
            let body = body_text(create).ok_or("a SQL function without a body")?;
            calls_in_sql(body, 0, DependencyReason::CalledFromSql, &mut shape.calls)
                .map_err(|message| format!("{message} (in the SQL body)"))?;
        }
        Some("plpgsql") => {
            let statement = statement_for_plpgsql(routine, &parsed.protobuf, create)?;
            shape.not_analysed = plpgsql_calls(&statement, &mut shape.calls)?;
        }
        // C, internal, other procedural languages: nothing to read.
        _ => {}
    }
    Ok(shape)
}

/// Adds the calls of every SQL expression and statement of a PL/pgSQL
/// body. Returns a note when libpg_query cannot describe the function.
pub(super) fn plpgsql_calls(
    statement: &str,
    calls: &mut Vec<Call>,
) -> Result<Option<String>, String> {
    let function = match pg_query::parse_plpgsql(statement) {
        Ok(function) => function,
        // The body compiled; libpg_query then failed to serialise it (it
        // does for trigger functions).
        Err(pg_query::Error::InvalidJson(_)) => {
            return Ok(Some(
                "libpg_query cannot describe this PL/pgSQL function (it cannot for trigger \
                 functions), so calls from its body were not inferred"
                    .to_owned(),
            ))
        }
        Err(pg_query::Error::Parse(message)) if crate::project::is_offline_limitation(&message) => {
            return Ok(Some(format!(
                "the offline PL/pgSQL parse cannot read this body ({})",
                crate::project::offline_limitation_reason(&message)
            )))
        }
        Err(error) => return Err(format!("{} (in the PL/pgSQL body)", describe(error))),
    };
    let mut expressions = Vec::new();
    collect_plpgsql_expressions(&function, &mut expressions);
    for (query, parse_mode) in expressions {
        // Every call has parentheses; most expressions (`v + 1`, `a = b`)
        // have none and need no parse.
        if !query.contains('(') {
            continue;
        }
        calls_in_sql(
            query,
            parse_mode,
            DependencyReason::CalledFromPlpgsql,
            calls,
        )
        .map_err(|message| format!("{message} (in the PL/pgSQL body, in {query:?})"))?;
    }
    Ok(None)
}

/// Adds the calls of SQL text read in parser mode `parse_mode`.
pub(super) fn calls_in_sql(
    sql: &str,
    parse_mode: i32,
    reason: DependencyReason,
    calls: &mut Vec<Call>,
) -> Result<(), String> {
    match pg_query::parse(sql, parse_mode) {
        Ok(parsed) => {
            for raw in &parsed.protobuf.stmts {
                collect_calls(raw, reason, calls)?;
            }
            Ok(())
        }
        // The tree is deeper than the protobuf decoder's recursion limit
        // (a chain of about fifty `a || b || ...` reaches it). libpg_query's
        // summary walks it with PostgreSQL's own tree walker and still lists
        // the functions called, without their argument counts.
        Err(pg_query::Error::Decode(_)) => {
            let summary = pg_query::summary(sql, parse_mode, -1).map_err(describe)?;
            calls.extend(
                summary
                    .functions
                    .into_iter()
                    .filter(|function| {
                        function.context == pg_query::protobuf::summary_result::Context::Call
                    })
                    .map(|function| Call {
                        schema: function.schema_name,
                        name: function.function_name,
                        arguments: None,
                        reason,
                    }),
            );
            Ok(())
        }
        Err(error) => Err(describe(error)),
    }
}

/// The statement to hand to the PL/pgSQL compiler. libpg_query compiles
/// without a catalog and refuses every `VARIADIC xs int[]` ("VARIADIC
/// parameter must be an array"); the body does not depend on the marker, so
/// such parameters are given as plain IN parameters.
pub(super) fn statement_for_plpgsql(
    routine: &Routine,
    parsed: &protobuf::ParseResult,
    create: &protobuf::CreateFunctionStmt,
) -> Result<String, String> {
    let variadic = FunctionParameterMode::FuncParamVariadic as i32;
    let is_variadic = |node: &protobuf::Node| matches!(&node.node, Some(NodeKind::FunctionParameter(parameter)) if parameter.mode == variadic);
    if !create.parameters.iter().any(is_variadic) {
        return Ok(routine.create_sql.clone());
    }
    let mut without_variadic = parsed.clone();
    for raw in &mut without_variadic.stmts {
        let Some(NodeKind::CreateFunctionStmt(create)) =
            raw.stmt.as_mut().and_then(|stmt| stmt.node.as_mut())
        else {
            continue;
        };
        for node in &mut create.parameters {
            if let Some(NodeKind::FunctionParameter(parameter)) = &mut node.node {
                if parameter.mode == variadic {
                    parameter.mode = FunctionParameterMode::FuncParamIn as i32;
                }
            }
        }
    }
    pg_query::deparse(&without_variadic, Default::default()).map_err(describe)
}

/// Every `PLpgSQL_expr` of a compiled PL/pgSQL function: its SQL text and
/// the parser mode it is read in (expression, assignment or statement).
pub(super) fn collect_plpgsql_expressions<'a>(value: &'a Value, out: &mut Vec<(&'a str, i32)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "PLpgSQL_expr" {
                    if let Some(query) = child.get("query").and_then(Value::as_str) {
                        // PostgreSQL's RawParseMode, which libpg_query's
                        // parser options take as they are.
                        let mode = child
                            .get("parseMode")
                            .and_then(Value::as_i64)
                            .and_then(|mode| i32::try_from(mode).ok())
                            .filter(|mode| (0..=5).contains(mode))
                            .unwrap_or(0);
                        out.push((query, mode));
                    }
                }
                collect_plpgsql_expressions(child, out);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_plpgsql_expressions(item, out)),
        _ => {}
    }
}

pub(super) fn call_of(
    funcname: &Value,
    arguments: Vec<ArgType>,
    reason: DependencyReason,
) -> Option<Call> {
    let names = funcname
        .as_array()?
        .iter()
        .map(|node| node.pointer("/node/String/sval")?.as_str())
        .collect::<Option<Vec<&str>>>()?;
    // `catalog.schema.name` is allowed when the catalog is the current one.
    let (schema, name) = match names.as_slice() {
        [name] => (None, *name),
        [.., schema, name] => (Some((*schema).to_owned()), *name),
        [] => return None,
    };
    Some(Call {
        schema,
        name: name.to_owned(),
        arguments: Some(arguments),
        reason,
    })
}

/// The argument counts a call may pass: the input parameters (for a
/// procedure also its OUT parameters, which CALL passes), fewer when the
/// last ones have defaults, any number from the VARIADIC one on.
pub(super) fn arity(parameters: &[&protobuf::FunctionParameter], is_procedure: bool) -> Arity {
    let (mut min, mut max, mut variadic) = (0, 0, false);
    for parameter in parameters {
        let mode = FunctionParameterMode::try_from(parameter.mode);
        match mode {
            Ok(FunctionParameterMode::FuncParamTable) => continue,
            Ok(FunctionParameterMode::FuncParamOut) if !is_procedure => continue,
            Ok(FunctionParameterMode::FuncParamOut) => {}
            Ok(FunctionParameterMode::FuncParamVariadic) => variadic = true,
            _ if parameter.defexpr.is_none() => min += 1,
            _ => {}
        }
        max += 1;
    }
    Arity {
        min,
        max: (!variadic).then_some(max),
    }
}

/// IN, INOUT and VARIADIC parameters (and those with no mode written) make
/// up a routine's identity.
pub(super) fn is_input(mode: i32) -> bool {
    !matches!(
        FunctionParameterMode::try_from(mode),
        Ok(FunctionParameterMode::FuncParamOut | FunctionParameterMode::FuncParamTable)
    )
}

/// The schemas of a `SET search_path = ...` clause, if the routine has one.
pub(super) fn search_path(create: &protobuf::CreateFunctionStmt) -> Option<Vec<String>> {
    create.options.iter().find_map(|option| {
        let Some(NodeKind::DefElem(element)) = &option.node else {
            return None;
        };
        let Some(NodeKind::VariableSetStmt(set)) = element.arg.as_ref()?.node.as_ref() else {
            return None;
        };
        if element.defname != "set" || set.name != "search_path" || set.args.is_empty() {
            return None;
        }
        set.args
            .iter()
            .map(|arg| match &arg.node {
                Some(NodeKind::AConst(constant)) => match &constant.val {
                    Some(protobuf::a_const::Val::Sval(value)) => Some(value.sval.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    })
}

pub(super) fn option_string<'a>(
    create: &'a protobuf::CreateFunctionStmt,
    name: &str,
) -> Option<&'a str> {
    create.options.iter().find_map(|option| match &option.node {
        Some(NodeKind::DefElem(element)) if element.defname == name => {
            match element.arg.as_ref()?.node.as_ref()? {
                NodeKind::String(value) => Some(value.sval.as_str()),
                _ => None,
            }
        }
        _ => None,
    })
}

/// The `AS '...'` body (the first string: C functions have two).
pub(super) fn body_text(create: &protobuf::CreateFunctionStmt) -> Option<&str> {
    create.options.iter().find_map(|option| match &option.node {
        Some(NodeKind::DefElem(element)) if element.defname == "as" => {
            match element.arg.as_ref()?.node.as_ref()? {
                NodeKind::List(list) => match list.items.first()?.node.as_ref()? {
                    NodeKind::String(value) => Some(value.sval.as_str()),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    })
}

pub(super) fn string_list(nodes: &[protobuf::Node]) -> Option<Vec<String>> {
    nodes
        .iter()
        .map(|node| match &node.node {
            Some(NodeKind::String(value)) => Some(value.sval.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn describe(error: pg_query::Error) -> String {
    match error {
        pg_query::Error::Parse(message) | pg_query::Error::Scan(message) => message,
        // Its message spells out the whole path into the tree.
        pg_query::Error::Decode(_) => {
            "the parse tree nests deeper than pg_query's protobuf decoder allows".to_owned()
        }
        other => other.to_string(),
    }
}
