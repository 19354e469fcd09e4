//! Domain types for the routines a plan carries, and their validated
//! conversion from the wire types.
//!
//! The controller builds these from the project's SQL (with PostgreSQL's own
//! parser) and the agent receives them over the link; on both sides the wire
//! form is converted here, so nothing downstream sees an unchecked value.

use std::fmt;
use std::time::Duration;

use crate::proto;
use crate::retire::{self, Retirement};

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN-1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Largest CREATE statement accepted for one routine.
pub const MAX_ROUTINE_SQL_BYTES: usize = 1024 * 1024;
/// Most routines in one plan.
pub const MAX_ROUTINES_PER_PLAN: usize = 10_000;
/// The smoke-test time bound when a test names none (SEED.md: 10 seconds).
pub const DEFAULT_SMOKE_MAX_DURATION: Duration = Duration::from_secs(10);
/// No smoke test may ask for more than this.
pub const MAX_SMOKE_MAX_DURATION: Duration = Duration::from_secs(3600);
/// Timed runs per definition when a `[perf]` probe names none: odd, so the
/// median is one measured run.
pub const DEFAULT_PERF_RUNS: u32 = 7;
/// Most timed runs a probe may ask for, per definition.
pub const MAX_PERF_RUNS: u32 = 1000;
/// Most schemas a declared search path may list.
pub const MAX_SEARCH_PATH_SCHEMAS: usize = 32;

/// A wire value that failed validation, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    /// Dotted path of the offending field, e.g. `routines[2].grants[0].grantee`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidField {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn within(self, prefix: &str) -> Self {
        InvalidField {
            field: format!("{prefix}.{}", self.field),
            reason: self.reason,
        }
    }
}

/// `schema.name(argtypes)`: what distinguishes one routine from its overloads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutineIdentity {
    pub schema: String,
    pub name: String,
    /// Input argument types as written in the source (`integer`, `text[]`).
    pub arg_types: Vec<String>,
}

impl RoutineIdentity {
    /// The text `to_regprocedure()` resolves: schema and name quoted, types
    /// as written. Passed as a bind parameter, never pasted into SQL.
    pub fn regprocedure_input(&self) -> String {
        format!(
            "{}.{}({})",
            quote_identifier(&self.schema),
            quote_identifier(&self.name),
            self.arg_types.join(", ")
        )
    }
}

impl fmt::Display for RoutineIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}({})",
            self.schema,
            self.name,
            self.arg_types.join(", ")
        )
    }
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` does when in
/// doubt: always in double quotes, embedded quotes doubled.
pub fn quote_identifier(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Function or procedure: they are created, called and granted differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutineKind {
    Function,
    Procedure,
}

impl RoutineKind {
    /// The keyword used in GRANT/ALTER/DROP statements.
    pub fn keyword(self) -> &'static str {
        match self {
            RoutineKind::Function => "FUNCTION",
            RoutineKind::Procedure => "PROCEDURE",
        }
    }
}

/// One routine of a plan, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Routine {
    pub identity: RoutineIdentity,
    pub kind: RoutineKind,
    /// The complete CREATE [OR REPLACE] statement, exactly as in the source.
    pub create_sql: String,
    /// The source file's companion statements acting on this routine
    /// (GRANT/REVOKE, COMMENT ON, ALTER … OWNER TO), each as in the file, in
    /// file order; run after the CREATE and `grants`, with `search_path`.
    pub companion_sql: Vec<String>,
    pub grants: Vec<Grant>,
    pub smoke_tests: Vec<SmokeTest>,
    /// Project-relative path of the file the routine came from.
    pub source_path: String,
    /// Routines (by name) this one needs first, as its sidecar declares.
    pub depends_on: Vec<String>,
    /// The sidecar's `[perf]` probe, when it declares one for this routine.
    pub perf_probe: Option<PerfProbe>,
    /// The sidecar's pgTAP script (`[tests] pgtap`), shared by its file's routines.
    pub pgtap: Option<PgtapScript>,
    /// Line of `source_path` where the statement starts (0: unknown); for
    /// reports only, not part of the plan id.
    pub source_line: u32,
    /// The search path the CREATE (and so its body's validation) and the
    /// smoke tests run with, as the project declares it; its first schema is
    /// where an unqualified CREATE lands. Empty: `public`
    /// ([`CODE_DEFAULT_SEARCH_PATH`]).
    pub search_path: Vec<String>,
    /// Set: the plan retires this routine instead of creating it (and
    /// `create_sql` is empty).
    pub retire: Option<Retirement>,
}

/// Where a project's code runs when it declares no search path: `public`,
/// as in a default PostgreSQL session. The agent's own statements never run
/// with it (see the agent's `connection.rs`): a schema anyone may create in
/// can shadow a catalog function with a better-matching overload.
pub const CODE_DEFAULT_SEARCH_PATH: &str = "public";

/// `SET LOCAL search_path TO "a", "b"` for a declared path, and
/// `TO "public"` ([`CODE_DEFAULT_SEARCH_PATH`]) for an empty one: the path a
/// plan's own SQL (CREATE, companions, smoke calls, probes) runs under. Each
/// schema goes through [`quote_identifier`]: a quoted `"$user"` or
/// `"pg_temp"` still means what PostgreSQL means by it.
pub fn set_local_search_path_sql(search_path: &[String]) -> String {
    let schemas: Vec<String> = if search_path.is_empty() {
        vec![quote_identifier(CODE_DEFAULT_SEARCH_PATH)]
    } else {
        search_path.iter().map(|s| quote_identifier(s)).collect()
    };
    format!("SET LOCAL search_path TO {}", schemas.join(", "))
}

/// A performance probe: one call, timed `runs` times on the old and on the
/// new definition (each set in a transaction that is rolled back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfProbe {
    /// One statement, e.g. `SELECT public.addarc('M-0001', 'M-0002')`.
    pub call_sql: String,
    pub runs: u32,
}

/// A pgTAP test file, as single statements without transaction control: the
/// agent runs them in its own transaction and always rolls it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgtapScript {
    /// Project-relative path, for reports.
    pub path: String,
    pub statements: Vec<String>,
}

/// A privilege the plan grants on a routine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub privilege: Privilege,
    pub grantee: Grantee,
}

/// Routines have exactly one privilege; ALL is its synonym.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privilege {
    Execute,
    All,
}

impl Privilege {
    /// Parses a privilege name, case-insensitively.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "EXECUTE" => Some(Privilege::Execute),
            "ALL" | "ALL PRIVILEGES" => Some(Privilege::All),
            _ => None,
        }
    }

    /// The SQL keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Privilege::Execute => "EXECUTE",
            Privilege::All => "ALL",
        }
    }
}

/// Who receives a grant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grantee {
    Public,
    Role(String),
}

impl Grantee {
    /// `PUBLIC` (any case) is the pseudo-role; anything else is a role name.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("public") {
            return Ok(Grantee::Public);
        }
        check_identifier(value)?;
        Ok(Grantee::Role(value.to_owned()))
    }

    /// The grantee as SQL: PUBLIC or a quoted role name.
    pub fn to_sql(&self) -> String {
        match self {
            Grantee::Public => "PUBLIC".to_owned(),
            Grantee::Role(role) => quote_identifier(role),
        }
    }

    fn as_wire(&self) -> String {
        match self {
            Grantee::Public => "PUBLIC".to_owned(),
            Grantee::Role(role) => role.clone(),
        }
    }
}

/// A smoke test: a call with test parameters and what it must return.
#[derive(Clone, Debug, PartialEq)]
pub struct SmokeTest {
    pub name: String,
    /// One statement, e.g. `SELECT * FROM addarc(1, 2)` or `CALL p(1)`.
    pub call_sql: String,
    /// Expected result columns in order; empty means "not checked".
    pub expect_columns: Vec<ExpectedColumn>,
    pub max_duration: Duration,
    /// Whether a WARNING raised by the call is tolerated.
    pub allow_warnings: bool,
    /// The routine's declared search path, which the call runs with (set
    /// inside its savepoint). Not on the wire: copied from the routine.
    pub search_path: Vec<String>,
}

/// A result column a smoke test expects: its name and its type as written
/// (resolved to a type oid by the database, so `integer` matches `int4`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedColumn {
    pub name: String,
    pub type_name: String,
}

fn check_identifier(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{value:?} is longer than {MAX_IDENTIFIER_BYTES} bytes, which PostgreSQL would truncate"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn check_type_name(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 256 || value.chars().any(char::is_control) || value.contains(';') {
        return Err(format!("{value:?} is not a type name"));
    }
    Ok(())
}

impl TryFrom<proto::Routine> for Routine {
    type Error = InvalidField;

    fn try_from(mut wire: proto::Routine) -> Result<Self, Self::Error> {
        check_identifier(&wire.schema).map_err(|r| InvalidField::new("schema", r))?;
        check_identifier(&wire.name).map_err(|r| InvalidField::new("name", r))?;
        for (index, arg) in wire.arg_types.iter().enumerate() {
            check_type_name(arg)
                .map_err(|r| InvalidField::new(format!("arg_types[{index}]"), r))?;
        }
        if wire.search_path.len() > MAX_SEARCH_PATH_SCHEMAS {
            return Err(InvalidField::new(
                "search_path",
                format!("more than {MAX_SEARCH_PATH_SCHEMAS} schemas"),
            ));
        }
        for (index, schema) in wire.search_path.iter().enumerate() {
            check_identifier(schema)
                .map_err(|r| InvalidField::new(format!("search_path[{index}]"), r))?;
        }
        let retire = match wire.retire.take() {
            Some(retirement) => {
                retire::check_nothing_to_run(&wire)?;
                Some(Retirement::try_from(retirement)?)
            }
            None => None,
        };
        if retire.is_none() && wire.create_sql.trim().is_empty() {
            return Err(InvalidField::new("create_sql", "must not be empty"));
        }
        if wire.create_sql.len() > MAX_ROUTINE_SQL_BYTES {
            return Err(InvalidField::new(
                "create_sql",
                format!(
                    "{} bytes is over the limit of {MAX_ROUTINE_SQL_BYTES}",
                    wire.create_sql.len()
                ),
            ));
        }
        if wire.create_sql.contains('\0') {
            return Err(InvalidField::new("create_sql", "contains a NUL byte"));
        }
        crate::companion_sql::check(&wire.companion_sql, retire.is_some())?;
        let grants = wire
            .grants
            .into_iter()
            .enumerate()
            .map(|(index, grant)| {
                Grant::try_from(grant).map_err(|e| e.within(&format!("grants[{index}]")))
            })
            .collect::<Result<_, _>>()?;
        let smoke_tests = wire
            .smoke_tests
            .into_iter()
            .enumerate()
            .map(|(index, test)| {
                SmokeTest::try_from(test)
                    .map(|test| SmokeTest {
                        search_path: wire.search_path.clone(),
                        ..test
                    })
                    .map_err(|e| e.within(&format!("smoke_tests[{index}]")))
            })
            .collect::<Result<_, _>>()?;
        for (index, name) in wire.depends_on.iter().enumerate() {
            if name.is_empty()
                || name.len() > 2 * MAX_IDENTIFIER_BYTES + 1
                || name.chars().any(char::is_control)
            {
                return Err(InvalidField::new(
                    format!("depends_on[{index}]"),
                    "not a routine name",
                ));
            }
        }
        let perf_probe = wire
            .perf_probe
            .map(PerfProbe::try_from)
            .transpose()
            .map_err(|e| e.within("perf_probe"))?;
        let pgtap = wire
            .pgtap
            .map(PgtapScript::try_from)
            .transpose()
            .map_err(|e| e.within("pgtap"))?;
        Ok(Routine {
            identity: RoutineIdentity {
                schema: wire.schema,
                name: wire.name,
                arg_types: wire.arg_types,
            },
            kind: if wire.is_procedure {
                RoutineKind::Procedure
            } else {
                RoutineKind::Function
            },
            create_sql: wire.create_sql,
            companion_sql: wire.companion_sql,
            grants,
            smoke_tests,
            source_path: wire.source_path,
            depends_on: wire.depends_on,
            perf_probe,
            pgtap,
            source_line: wire.source_line,
            search_path: wire.search_path,
            retire,
        })
    }
}

impl From<Routine> for proto::Routine {
    fn from(routine: Routine) -> Self {
        proto::Routine {
            schema: routine.identity.schema,
            name: routine.identity.name,
            arg_types: routine.identity.arg_types,
            is_procedure: routine.kind == RoutineKind::Procedure,
            create_sql: routine.create_sql,
            grants: routine.grants.into_iter().map(Into::into).collect(),
            smoke_tests: routine.smoke_tests.into_iter().map(Into::into).collect(),
            source_path: routine.source_path,
            depends_on: routine.depends_on,
            perf_probe: routine.perf_probe.map(|probe| proto::PerfProbe {
                call_sql: probe.call_sql,
                runs: probe.runs,
            }),
            pgtap: routine.pgtap.map(|script| proto::PgtapScript {
                path: script.path,
                statements: script.statements,
            }),
            source_line: routine.source_line,
            search_path: routine.search_path,
            retire: routine.retire.map(Into::into),
            companion_sql: routine.companion_sql,
        }
    }
}

impl TryFrom<proto::PerfProbe> for PerfProbe {
    type Error = InvalidField;

    fn try_from(wire: proto::PerfProbe) -> Result<Self, Self::Error> {
        check_statement("call_sql", &wire.call_sql)?;
        if wire.runs == 0 || wire.runs > MAX_PERF_RUNS {
            return Err(InvalidField::new(
                "runs",
                format!("must be 1 to {MAX_PERF_RUNS}"),
            ));
        }
        Ok(PerfProbe {
            call_sql: wire.call_sql,
            runs: wire.runs,
        })
    }
}

impl TryFrom<proto::PgtapScript> for PgtapScript {
    type Error = InvalidField;

    fn try_from(wire: proto::PgtapScript) -> Result<Self, Self::Error> {
        if wire.path.trim().is_empty()
            || wire.path.len() > 1024
            || wire.path.chars().any(char::is_control)
        {
            return Err(InvalidField::new("path", "not a project file path"));
        }
        if wire.statements.is_empty() {
            return Err(InvalidField::new(
                "statements",
                "a script needs at least one",
            ));
        }
        let total: usize = wire.statements.iter().map(String::len).sum();
        if total > MAX_ROUTINE_SQL_BYTES {
            return Err(InvalidField::new(
                "statements",
                format!("{total} bytes is over the limit of {MAX_ROUTINE_SQL_BYTES}"),
            ));
        }
        for (index, statement) in wire.statements.iter().enumerate() {
            check_statement(&format!("statements[{index}]"), statement)?;
        }
        Ok(PgtapScript {
            path: wire.path,
            statements: wire.statements,
        })
    }
}

/// A statement the agent will send as is: not empty, no NUL, bounded.
pub(crate) fn check_statement(field: &str, sql: &str) -> Result<(), InvalidField> {
    if sql.trim().is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if sql.contains('\0') {
        return Err(InvalidField::new(field, "contains a NUL byte"));
    }
    if sql.len() > MAX_ROUTINE_SQL_BYTES {
        return Err(InvalidField::new(
            field,
            format!(
                "{} bytes is over the limit of {MAX_ROUTINE_SQL_BYTES}",
                sql.len()
            ),
        ));
    }
    Ok(())
}

impl TryFrom<proto::Grant> for Grant {
    type Error = InvalidField;

    fn try_from(wire: proto::Grant) -> Result<Self, Self::Error> {
        let privilege = Privilege::parse(&wire.privilege).ok_or_else(|| {
            InvalidField::new(
                "privilege",
                format!(
                    "{:?} is not a routine privilege (EXECUTE or ALL)",
                    wire.privilege
                ),
            )
        })?;
        let grantee = Grantee::parse(&wire.grantee).map_err(|r| InvalidField::new("grantee", r))?;
        Ok(Grant { privilege, grantee })
    }
}

impl From<Grant> for proto::Grant {
    fn from(grant: Grant) -> Self {
        proto::Grant {
            privilege: grant.privilege.keyword().to_owned(),
            grantee: grant.grantee.as_wire(),
        }
    }
}

impl TryFrom<proto::SmokeTest> for SmokeTest {
    type Error = InvalidField;

    fn try_from(wire: proto::SmokeTest) -> Result<Self, Self::Error> {
        if wire.name.trim().is_empty() {
            return Err(InvalidField::new("name", "must not be empty"));
        }
        if wire.call_sql.trim().is_empty() {
            return Err(InvalidField::new("call_sql", "must not be empty"));
        }
        if wire.call_sql.contains('\0') {
            return Err(InvalidField::new("call_sql", "contains a NUL byte"));
        }
        let max_duration = match wire.max_duration_ms {
            0 => DEFAULT_SMOKE_MAX_DURATION,
            ms => Duration::from_millis(ms),
        };
        if max_duration > MAX_SMOKE_MAX_DURATION {
            return Err(InvalidField::new(
                "max_duration_ms",
                format!("{} ms is over the one-hour limit", wire.max_duration_ms),
            ));
        }
        let expect_columns = wire
            .expect_columns
            .into_iter()
            .enumerate()
            .map(|(index, column)| {
                let field = |f: &str| format!("expect_columns[{index}].{f}");
                if column.name.is_empty() {
                    return Err(InvalidField::new(field("name"), "must not be empty"));
                }
                check_type_name(&column.type_name)
                    .map_err(|r| InvalidField::new(field("type_name"), r))?;
                Ok(ExpectedColumn {
                    name: column.name,
                    type_name: column.type_name,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(SmokeTest {
            name: wire.name,
            call_sql: wire.call_sql,
            expect_columns,
            max_duration,
            allow_warnings: wire.allow_warnings,
            search_path: Vec::new(),
        })
    }
}

impl From<SmokeTest> for proto::SmokeTest {
    fn from(test: SmokeTest) -> Self {
        proto::SmokeTest {
            name: test.name,
            call_sql: test.call_sql,
            expect_columns: test
                .expect_columns
                .into_iter()
                .map(|c| proto::ExpectedColumn {
                    name: c.name,
                    type_name: c.type_name,
                })
                .collect(),
            max_duration_ms: u64::try_from(test.max_duration.as_millis()).unwrap_or(u64::MAX),
            allow_warnings: test.allow_warnings,
        }
    }
}

/// Converts a plan's wire routines, enforcing the per-plan limit.
pub fn routines_from_wire(wire: Vec<proto::Routine>) -> Result<Vec<Routine>, InvalidField> {
    if wire.is_empty() {
        return Err(InvalidField::new(
            "routines",
            "a plan needs at least one routine",
        ));
    }
    if wire.len() > MAX_ROUTINES_PER_PLAN {
        return Err(InvalidField::new(
            "routines",
            format!(
                "{} routines is over the limit of {MAX_ROUTINES_PER_PLAN}",
                wire.len()
            ),
        ));
    }
    let routines: Vec<Routine> = wire
        .into_iter()
        .enumerate()
        .map(|(index, routine)| {
            Routine::try_from(routine).map_err(|e| e.within(&format!("routines[{index}]")))
        })
        .collect::<Result<_, _>>()?;
    retire::check_plan(&routines)?;
    Ok(routines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_routine() -> proto::Routine {
        proto::Routine {
            schema: "public".into(),
            name: "addarc".into(),
            arg_types: vec!["integer".into(), "integer".into()],
            is_procedure: false,
            create_sql: "CREATE FUNCTION public.addarc(a integer, b integer) RETURNS int LANGUAGE sql AS 'select 1'".into(),
            grants: vec![proto::Grant {
                privilege: "execute".into(),
                grantee: "app_rw".into(),
            }],
            smoke_tests: vec![proto::SmokeTest {
                name: "adds".into(),
                call_sql: "SELECT * FROM public.addarc(1, 2)".into(),
                expect_columns: vec![],
                max_duration_ms: 0,
                allow_warnings: false,
            }],
            source_path: "procedures/addarc.sql".into(),
            depends_on: vec!["reconcilemupstream".into()],
            perf_probe: Some(proto::PerfProbe {
                call_sql: "SELECT public.addarc(1, 2)".into(),
                runs: 5,
            }),
            pgtap: Some(proto::PgtapScript {
                path: "tests/addarc.pgtap.sql".into(),
                statements: vec!["SELECT plan(1)".into(), "SELECT pass('x')".into()],
            }),
            source_line: 4,
            search_path: vec!["app".into(), "public".into()],
            retire: None,
            companion_sql: Vec::new(),
        }
    }

    #[test]
    fn valid_routine_round_trips_through_the_wire() {
        let routine = Routine::try_from(wire_routine()).expect("valid");
        assert_eq!(
            routine.identity.to_string(),
            "public.addarc(integer, integer)"
        );
        assert_eq!(
            routine.identity.regprocedure_input(),
            "\"public\".\"addarc\"(integer, integer)"
        );
        assert_eq!(
            routine.smoke_tests[0].max_duration,
            DEFAULT_SMOKE_MAX_DURATION
        );
        assert_eq!(routine.grants[0].privilege, Privilege::Execute);
        assert_eq!(routine.smoke_tests[0].search_path, ["app", "public"]);
        let back = proto::Routine::from(routine.clone());
        assert_eq!(Routine::try_from(back).expect("valid"), routine);
    }

    #[test]
    fn hostile_fields_are_refused_with_their_path() {
        let mut wire = wire_routine();
        wire.companion_sql = vec![
            "REVOKE ALL ON FUNCTION public.addarc(integer, integer) FROM PUBLIC".into(),
            "DROP TABLE t".into(),
        ];
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "companion_sql[1]"
        );
        let mut wire = wire_routine();
        wire.companion_sql =
            vec!["COMMENT ON FUNCTION public.addarc(integer, integer) IS 'x'".into()];
        let routine = Routine::try_from(wire.clone()).expect("a companion statement is fine");
        assert_eq!(
            proto::Routine::from(routine).companion_sql,
            wire.companion_sql
        );

        let mut wire = wire_routine();
        wire.grants[0].grantee = "x".repeat(64);
        let error = Routine::try_from(wire).expect_err("too long");
        assert_eq!(error.field, "grants[0].grantee");

        let mut wire = wire_routine();
        wire.grants[0].privilege = "SELECT".into();
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "grants[0].privilege"
        );

        let mut wire = wire_routine();
        wire.arg_types[1] = "int); DROP TABLE t; --".into();
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "arg_types[1]"
        );

        let mut wire = wire_routine();
        wire.search_path[1] = "bad\nschema".into();
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "search_path[1]"
        );

        let mut wire = wire_routine();
        wire.smoke_tests[0].max_duration_ms = 7_200_000;
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "smoke_tests[0].max_duration_ms"
        );

        let mut wire = wire_routine();
        if let Some(probe) = wire.perf_probe.as_mut() {
            probe.runs = 0;
        }
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "perf_probe.runs"
        );

        let mut wire = wire_routine();
        if let Some(script) = wire.pgtap.as_mut() {
            script.statements[1] = " ".into();
        }
        assert_eq!(
            Routine::try_from(wire).expect_err("bad").field,
            "pgtap.statements[1]"
        );
    }

    #[test]
    fn a_declared_search_path_is_set_locally_with_every_schema_quoted() {
        assert_eq!(
            set_local_search_path_sql(&[]),
            "SET LOCAL search_path TO \"public\""
        );
        assert_eq!(
            set_local_search_path_sql(&["tap".into(), "$user".into(), "we\"ird".into()]),
            "SET LOCAL search_path TO \"tap\", \"$user\", \"we\"\"ird\""
        );
    }

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(Grantee::parse("PUBLIC"), Ok(Grantee::Public));
        assert_eq!(
            Grantee::Role("Weird Role".into()).to_sql(),
            "\"Weird Role\""
        );
    }
}
