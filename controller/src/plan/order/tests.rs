//! Tests of the batch order.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use pgrollout_shared::proto;

use super::*;

/// A routine with identity `schema.name(type, ...)` and this CREATE.
fn routine(identity: &str, create_sql: &str) -> Routine {
    let (qualified, args) = identity.trim_end_matches(')').split_once('(').expect("(");
    let (schema, name) = qualified.split_once('.').expect("schema.name");
    Routine::try_from(proto::Routine {
        schema: schema.into(),
        name: name.into(),
        arg_types: args
            .split(", ")
            .filter(|a| !a.is_empty())
            .map(Into::into)
            .collect(),
        is_procedure: create_sql.contains("PROCEDURE"),
        create_sql: create_sql.into(),
        source_path: format!("procedures/{name}.sql"),
        ..Default::default()
    })
    .expect("valid routine")
}

fn order(routines: &[Routine]) -> BatchOrder {
    order_routines(routines, &[]).expect("orders")
}

fn ordered_identities(routines: &[Routine], batch: &BatchOrder) -> Vec<String> {
    batch
        .order
        .iter()
        .map(|&index| routines[index].identity.to_string())
        .collect()
}

/// What `identity` depends on, as `(identity, reason)`, sorted.
fn needs(
    routines: &[Routine],
    batch: &BatchOrder,
    identity: &str,
) -> Vec<(String, DependencyReason)> {
    let index = routines
        .iter()
        .position(|r| r.identity.to_string() == identity)
        .expect("known identity");
    let mut found: Vec<_> = batch
        .dependencies_of(index)
        .map(|d| (routines[d.to].identity.to_string(), d.reason))
        .collect();
    found.sort();
    found
}

fn assert_respects_dependencies(batch: &BatchOrder) {
    let mut position = vec![usize::MAX; batch.order.len()];
    for (at, &index) in batch.order.iter().enumerate() {
        position[index] = at;
    }
    for dependency in &batch.dependencies {
        assert!(
            position[dependency.to] < position[dependency.from],
            "{dependency:?} violated"
        );
    }
}

/// Callee first matters here: PostgreSQL checks these bodies at CREATE.
/// Checked by hand on PostgreSQL 15: `psql -1` of them in the order
/// below succeeds; in reverse it fails with "function
/// public.totals(integer) does not exist".
fn sql_chain() -> Vec<Routine> {
    vec![
        routine(
            "public.report(integer)",
            "CREATE FUNCTION public.report(x integer) RETURNS text LANGUAGE sql \
             AS $$ SELECT CASE WHEN EXISTS (SELECT 1 FROM public.totals(x) t WHERE t > 0) \
             THEN 'some' ELSE 'none' END $$",
        ),
        routine(
            "public.totals(integer)",
            "CREATE FUNCTION public.totals(x integer) RETURNS bigint LANGUAGE sql \
             AS 'SELECT count(*) FROM series(x) AS s'",
        ),
        routine(
            "public.series(integer)",
            "CREATE FUNCTION public.series(x integer) RETURNS SETOF integer LANGUAGE sql \
             BEGIN ATOMIC SELECT doubled(x); SELECT doubled(x) + g FROM generate_series(1, 3) g; END",
        ),
        routine(
            "public.doubled(integer)",
            "CREATE FUNCTION public.doubled(x integer) RETURNS integer LANGUAGE sql \
             RETURN base(x) * 2",
        ),
        routine(
            "public.base(integer)",
            "CREATE FUNCTION public.base(x integer) RETURNS integer LANGUAGE sql \
             AS $$ SELECT abs(x) $$",
        ),
    ]
}

#[test]
fn a_chain_of_sql_functions_is_ordered_callee_first_whatever_the_input_order() {
    let mut routines = sql_chain();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..10 {
        rng.shuffle(&mut routines);
        let batch = order(&routines);
        assert_eq!(
            ordered_identities(&routines, &batch),
            [
                "public.base(integer)",
                "public.doubled(integer)",
                "public.series(integer)",
                "public.totals(integer)",
                "public.report(integer)",
            ]
        );
        assert_eq!(batch.dependencies.len(), 4);
        assert!(batch
            .dependencies
            .iter()
            .all(|d| d.reason == DependencyReason::CalledFromSql));
    }
}

#[test]
fn calls_anywhere_in_a_plpgsql_body_are_found() {
    let callee = |name: &str| {
        routine(
            &format!("public.{name}(integer)"),
            &format!(
                "CREATE FUNCTION public.{name}(x integer) RETURNS integer LANGUAGE sql RETURN x"
            ),
        )
    };
    let mut routines: Vec<Routine> = ["seed", "is_ok", "touch", "bump", "label", "dynamic"]
        .into_iter()
        .map(callee)
        .collect();
    routines.push(routine(
        "public.rows_of(integer)",
        "CREATE FUNCTION public.rows_of(x integer) RETURNS SETOF integer LANGUAGE sql \
         RETURN x",
    ));
    routines.push(routine(
        "public.log_it(integer)",
        "CREATE PROCEDURE public.log_it(x integer) LANGUAGE sql BEGIN ATOMIC SELECT x; END",
    ));
    routines.push(routine(
        "public.main(integer)",
        "CREATE FUNCTION public.main(p integer) RETURNS SETOF integer LANGUAGE plpgsql AS $$
         DECLARE
           v integer := seed(1);
         BEGIN
           IF is_ok(p) > 0 AND lower('X') = 'x' THEN
             PERFORM touch(p);
           END IF;
           v := v + coalesce(bump(v), 0);
           CALL public.log_it(v);
           RAISE NOTICE 'at %', now();
           EXECUTE 'SELECT dynamic(1)';
           RETURN QUERY SELECT * FROM rows_of(p) WHERE label(p) IS NOT NULL;
           RETURN QUERY SELECT main(p - 1) WHERE p > 0;
         END $$",
    ));
    let batch = order(&routines);
    let plpgsql = DependencyReason::CalledFromPlpgsql;
    assert_eq!(
        needs(&routines, &batch, "public.main(integer)"),
        [
            ("public.bump(integer)".to_owned(), plpgsql),
            ("public.is_ok(integer)".to_owned(), plpgsql),
            ("public.label(integer)".to_owned(), plpgsql),
            ("public.log_it(integer)".to_owned(), plpgsql),
            ("public.rows_of(integer)".to_owned(), plpgsql),
            ("public.seed(integer)".to_owned(), plpgsql),
            ("public.touch(integer)".to_owned(), plpgsql),
        ],
        "dynamic SQL, built-ins and recursion are not dependencies"
    );
    assert_eq!(batch.order.last(), Some(&(routines.len() - 1)));
}

#[test]
fn a_called_procedure_comes_first_out_arguments_included() {
    let routines = vec![
        routine(
            "public.caller()",
            "CREATE PROCEDURE public.caller() LANGUAGE sql BEGIN ATOMIC CALL public.inner_p(1); END",
        ),
        routine(
            "public.inner_p(integer)",
            "CREATE PROCEDURE public.inner_p(a integer) LANGUAGE sql BEGIN ATOMIC SELECT a; END",
        ),
        routine(
            "public.uses_out()",
            "CREATE PROCEDURE public.uses_out() LANGUAGE plpgsql AS $$
             DECLARE v integer; BEGIN CALL with_out(1, v); END $$",
        ),
        routine(
            "public.with_out(integer)",
            "CREATE PROCEDURE public.with_out(a integer, OUT b integer) LANGUAGE plpgsql \
             AS $$ BEGIN b := a; END $$",
        ),
    ];
    let batch = order(&routines);
    assert_eq!(
        needs(&routines, &batch, "public.caller()"),
        [(
            "public.inner_p(integer)".to_owned(),
            DependencyReason::CalledFromSql
        )]
    );
    assert_eq!(
        needs(&routines, &batch, "public.uses_out()"),
        [(
            "public.with_out(integer)".to_owned(),
            DependencyReason::CalledFromPlpgsql
        )]
    );
    assert_respects_dependencies(&batch);
}

#[test]
fn overloads_defaults_and_variadics_are_resolved_by_argument_count() {
    let sql = DependencyReason::CalledFromSql;
    let routines = vec![
        routine("public.f(integer)", "CREATE FUNCTION public.f(a integer) RETURNS integer LANGUAGE sql RETURN a"),
        routine("public.f(text)", "CREATE FUNCTION public.f(a text) RETURNS integer LANGUAGE sql RETURN 1"),
        routine(
            "public.f(integer, integer)",
            "CREATE FUNCTION public.f(a integer, b integer) RETURNS integer LANGUAGE sql RETURN a + b",
        ),
        routine(
            "public.g(integer, integer)",
            "CREATE FUNCTION public.g(a integer, b integer DEFAULT 0, OUT c integer) \
             LANGUAGE sql RETURN a + b",
        ),
        routine(
            "public.v(integer, integer[])",
            "CREATE FUNCTION public.v(a integer, VARIADIC xs integer[]) RETURNS integer \
             LANGUAGE plpgsql AS $$ BEGIN RETURN f(a, array_length(xs, 1)); END $$",
        ),
        routine("public.two()", "CREATE FUNCTION public.two() RETURNS integer LANGUAGE sql RETURN f(1, 2)"),
        routine("public.one()", "CREATE FUNCTION public.one() RETURNS integer LANGUAGE sql RETURN f(1)"),
        routine("public.unknown()", "CREATE FUNCTION public.unknown() RETURNS integer LANGUAGE sql RETURN f('1')"),
        routine(
            "public.defaults()",
            "CREATE FUNCTION public.defaults() RETURNS integer LANGUAGE sql \
             BEGIN ATOMIC SELECT g(1); SELECT g(1, 2); END",
        ),
        routine(
            "public.too_many()",
            "CREATE FUNCTION public.too_many() RETURNS integer LANGUAGE sql RETURN g(1, 2, 3)",
        ),
        routine(
            "public.spread()",
            "CREATE FUNCTION public.spread() RETURNS integer LANGUAGE sql RETURN v(1) + v(1, 2, 3, 4)",
        ),
    ];
    let batch = order(&routines);
    assert_eq!(
        needs(&routines, &batch, "public.two()"),
        [("public.f(integer, integer)".to_owned(), sql)]
    );
    assert_eq!(
        needs(&routines, &batch, "public.one()"),
        [("public.f(integer)".to_owned(), sql)],
        "an integer constant is an int4: the exact match is the one called"
    );
    assert_eq!(
        needs(&routines, &batch, "public.unknown()"),
        [
            ("public.f(integer)".to_owned(), sql),
            ("public.f(text)".to_owned(), sql)
        ],
        "every overload that takes one argument, as a literal's type is not known"
    );
    assert_eq!(
        needs(&routines, &batch, "public.defaults()"),
        [("public.g(integer, integer)".to_owned(), sql)]
    );
    assert_eq!(needs(&routines, &batch, "public.too_many()"), []);
    assert_eq!(
        needs(&routines, &batch, "public.spread()"),
        [("public.v(integer, integer[])".to_owned(), sql)]
    );
    assert_eq!(
        needs(&routines, &batch, "public.v(integer, integer[])"),
        [(
            "public.f(integer, integer)".to_owned(),
            DependencyReason::CalledFromPlpgsql
        )],
        "a VARIADIC PL/pgSQL function is read too"
    );
    assert_respects_dependencies(&batch);
}

#[test]
fn schema_qualified_calls_match_their_schema_and_unqualified_ones_the_search_path() {
    let sql = DependencyReason::CalledFromSql;
    let helper = |schema: &str| {
        routine(
            &format!("{schema}.helper()"),
            &format!("CREATE FUNCTION {schema}.helper() RETURNS integer LANGUAGE sql RETURN 1"),
        )
    };
    let caller = |identity: &str, set: &str, call: &str| {
        let name = identity.trim_end_matches("()");
        routine(
            identity,
            &format!("CREATE FUNCTION {name}() RETURNS integer LANGUAGE sql {set} RETURN {call}"),
        )
    };
    let routines = vec![
        helper("app"),
        helper("public"),
        routine(
            "util.lonely()",
            "CREATE FUNCTION util.lonely() RETURNS integer LANGUAGE sql RETURN 1",
        ),
        caller("public.qualified()", "", "app.helper()"),
        caller("app.own_schema()", "", "helper()"),
        caller("public.in_public()", "", "helper()"),
        caller(
            "other.with_path()",
            "SET search_path = app, pg_temp",
            "helper()",
        ),
        caller("public.elsewhere()", "", "lonely()"),
        caller("public.wrong_schema()", "", "public.lonely()"),
    ];
    let batch = order(&routines);
    assert_eq!(
        needs(&routines, &batch, "public.qualified()"),
        [("app.helper()".to_owned(), sql)]
    );
    assert_eq!(
        needs(&routines, &batch, "app.own_schema()"),
        [("app.helper()".to_owned(), sql)]
    );
    assert_eq!(
        needs(&routines, &batch, "public.in_public()"),
        [("public.helper()".to_owned(), sql)]
    );
    assert_eq!(
        needs(&routines, &batch, "other.with_path()"),
        [("app.helper()".to_owned(), sql)]
    );
    assert_eq!(
        needs(&routines, &batch, "public.elsewhere()"),
        [("util.lonely()".to_owned(), sql)],
        "not on the search path: the database's search path may include it"
    );
    assert_eq!(needs(&routines, &batch, "public.wrong_schema()"), []);
}

#[test]
fn parameter_defaults_are_checked_at_create_so_what_they_call_comes_first() {
    let routines = vec![
        routine(
            "public.stamp(timestamp with time zone)",
            "CREATE FUNCTION public.stamp(at timestamptz DEFAULT public.clock()) \
             RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN at::text; END $$",
        ),
        routine(
            "public.clock()",
            "CREATE FUNCTION public.clock() RETURNS timestamptz LANGUAGE sql RETURN now()",
        ),
    ];
    let batch = order(&routines);
    assert_eq!(
        needs(&routines, &batch, "public.stamp(timestamp with time zone)"),
        [(
            "public.clock()".to_owned(),
            DependencyReason::CalledFromDefault
        )]
    );
    assert_eq!(batch.order, [1, 0]);
}

#[test]
fn declared_names_mean_every_overload_and_unknown_ones_are_reported() {
    let function = |identity: &str, parameters: &str| {
        let name = identity.split('(').next().expect("name");
        routine(
            identity,
            &format!(
                "CREATE FUNCTION {name}({parameters}) RETURNS integer LANGUAGE plpgsql \
                 AS $$ BEGIN RETURN 1; END $$"
            ),
        )
    };
    let routines = vec![
        function("public.rec(text)", "a text"),
        function("public.rec(text, integer)", "a text, b int"),
        function("public.add(text)", "a text"),
        function("public.add(text, text)", "a text, b text"),
        function("public.one()", ""),
    ];
    let declared = vec![
        vec![],
        vec![],
        vec![
            "REC".to_owned(),
            "add".to_owned(),
            "other.rec".to_owned(),
            "missing".to_owned(),
        ],
        vec!["public.rec(text, int4)".to_owned(), "add(text)".to_owned()],
    ];
    let batch = order_routines(&routines, &declared).expect("orders");
    let declared_reason = DependencyReason::Declared;
    assert_eq!(
        needs(&routines, &batch, "public.add(text)"),
        [
            ("public.rec(text)".to_owned(), declared_reason),
            ("public.rec(text, integer)".to_owned(), declared_reason),
        ],
        "its own name is skipped: the sidecar is shared by all overloads"
    );
    assert_eq!(
        needs(&routines, &batch, "public.add(text, text)"),
        [
            ("public.add(text)".to_owned(), declared_reason),
            ("public.rec(text, integer)".to_owned(), declared_reason),
        ]
    );
    assert_eq!(
        batch.unresolved_declared,
        [(2, "other.rec".to_owned()), (2, "missing".to_owned())]
    );
    assert_respects_dependencies(&batch);
}

fn calls(identity: &str, callee: &str) -> Routine {
    let name = identity.split('(').next().expect("name");
    let parameters = if identity.ends_with("(integer)") {
        "a integer"
    } else {
        ""
    };
    routine(
        identity,
        &format!(
            "CREATE FUNCTION {name}({parameters}) RETURNS integer LANGUAGE sql RETURN {callee}"
        ),
    )
}

#[test]
fn a_cycle_is_an_error_naming_its_path() {
    let two = vec![
        calls("public.a(integer)", "b()"),
        calls("public.b()", "a(1)"),
    ];
    let error = order_routines(&two, &[]).expect_err("cycle");
    assert_eq!(
        error.to_string(),
        "cycle: public.a(integer) → public.b() → public.a(integer)"
    );

    // A longer cycle through the same routines, and a routine that only
    // needs the cycle: the shortest cycle is named, from its first
    // routine by identity.
    let mut three = vec![
        calls("public.r()", "public.p()"),
        calls("public.p()", "public.q() + public.s()"),
        calls("public.q()", "public.r()"),
        calls("public.s()", "public.t()"),
        calls("public.t()", "public.u()"),
        calls("public.u()", "public.r()"),
        calls("public.waits()", "public.p()"),
        calls("public.free()", "1"),
    ];
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..5 {
        rng.shuffle(&mut three);
        assert_eq!(
            order_routines(&three, &[]),
            Err(OrderError::Cycle {
                cycle: ["public.p()", "public.q()", "public.r()", "public.p()"]
                    .map(String::from)
                    .to_vec()
            })
        );
    }

    let declared = vec![vec!["b".to_owned()], vec!["a".to_owned()]];
    let unrelated = vec![calls("public.a()", "1"), calls("public.b()", "1")];
    assert!(matches!(
        order_routines(&unrelated, &declared),
        Err(OrderError::Cycle { .. })
    ));
}

#[test]
fn definitions_that_do_not_parse_are_all_reported_and_trigger_functions_noted() {
    let broken = vec![
        routine(
            "public.bad_sql()",
            "CREATE FUNCTION public.bad_sql() RETURNS integer LANGUAGE sql AS $$ SELEC 1 $$",
        ),
        routine(
            "public.bad_plpgsql()",
            "CREATE FUNCTION public.bad_plpgsql() RETURNS integer LANGUAGE plpgsql \
             AS $$ BEGIN RETURN 1 END $$",
        ),
        calls("public.good()", "1"),
    ];
    let Err(OrderError::Unreadable { routines }) = order_routines(&broken, &[]) else {
        panic!("expected unreadable routines");
    };
    let names: Vec<&str> = routines.iter().map(|r| r.routine.as_str()).collect();
    assert_eq!(names, ["public.bad_sql()", "public.bad_plpgsql()"]);
    assert!(routines[0].message.contains("syntax error"), "{routines:?}");

    let with_trigger = vec![
        routine(
            "public.audit()",
            "CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN NEW.at := public.good(); RETURN NEW; END $$",
        ),
        calls("public.good()", "1"),
    ];
    let declared = vec![vec!["good".to_owned()]];
    let batch = order_routines(&with_trigger, &declared).expect("orders");
    assert_eq!(batch.order, [1, 0]);
    assert_eq!(batch.not_analysed.len(), 1);
    assert_eq!(batch.not_analysed[0].0, 0);
}

#[test]
fn calls_in_trees_too_deep_for_the_protobuf_decoder_are_still_found() {
    let terms = |count: usize| -> String {
        let parts: Vec<String> = (0..count).map(|i| format!("part(x, {i})")).collect();
        parts.join(" || ")
    };
    let routines = vec![
        routine(
            "public.part(integer, integer)",
            "CREATE FUNCTION public.part(x integer, i integer) RETURNS text LANGUAGE sql \
             RETURN (x + i)::text",
        ),
        routine(
            "public.part(integer)",
            "CREATE FUNCTION public.part(x integer) RETURNS text LANGUAGE sql RETURN x::text",
        ),
        routine(
            "public.line(integer)",
            &format!(
                "CREATE FUNCTION public.line(x integer) RETURNS text LANGUAGE sql \
                 AS $$ SELECT {} $$",
                terms(120)
            ),
        ),
        routine(
            "public.line_plpgsql(integer)",
            &format!(
                "CREATE FUNCTION public.line_plpgsql(x integer) RETURNS text \
                 LANGUAGE plpgsql AS $$ DECLARE v text; BEGIN v := {}; RETURN v; END $$",
                terms(80)
            ),
        ),
    ];
    let batch = order(&routines);
    let every_overload = |reason| {
        vec![
            ("public.part(integer)".to_owned(), reason),
            ("public.part(integer, integer)".to_owned(), reason),
        ]
    };
    assert_eq!(
        needs(&routines, &batch, "public.line(integer)"),
        every_overload(DependencyReason::CalledFromSql),
        "argument counts are not known then, so every overload counts"
    );
    assert_eq!(
        needs(&routines, &batch, "public.line_plpgsql(integer)"),
        every_overload(DependencyReason::CalledFromPlpgsql)
    );
}

/// `count` routines calling up to three earlier ones each: SQL and
/// PL/pgSQL alternately, every tenth with a two-argument overload that
/// calls the one-argument one.
fn generated_batch(count: usize, rng: &mut fastrand::Rng) -> Vec<Routine> {
    let mut routines = Vec::new();
    for i in 0..count {
        let callees: BTreeSet<usize> = (0..rng.usize(0..4))
            .filter(|_| i > 0)
            .map(|_| rng.usize(0..i))
            .collect();
        let called: Vec<String> = callees.iter().map(|j| format!("r{j:04}(x)")).collect();
        let create_sql = if i % 2 == 0 {
            let sum = std::iter::once("x".to_owned())
                .chain(called)
                .collect::<Vec<_>>();
            format!(
                "CREATE FUNCTION public.r{i:04}(x integer) RETURNS integer LANGUAGE sql \
                 AS $$ SELECT {} $$",
                sum.join(" + ")
            )
        } else {
            let steps: String = called
                .iter()
                .enumerate()
                .map(|(n, call)| match n {
                    0 => format!("IF {call} > 0 THEN v := v + 1; END IF;\n"),
                    1 => format!("PERFORM {call};\n"),
                    _ => format!("v := v + {call};\n"),
                })
                .collect();
            format!(
                "CREATE FUNCTION public.r{i:04}(x integer) RETURNS integer LANGUAGE plpgsql \
                 AS $$\nDECLARE v integer := 0;\nBEGIN\n{steps}RETURN v + x;\nEND\n$$"
            )
        };
        routines.push(routine(&format!("public.r{i:04}(integer)"), &create_sql));
        if i % 10 == 0 {
            routines.push(routine(
                &format!("public.r{i:04}(integer, integer)"),
                &format!(
                    "CREATE FUNCTION public.r{i:04}(x integer, y integer) RETURNS integer \
                     LANGUAGE sql RETURN r{i:04}(x) + y"
                ),
            ));
        }
    }
    routines
}

#[test]
fn the_order_does_not_depend_on_the_input_order() {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut routines = generated_batch(120, &mut rng);
    let described = |routines: &[Routine], batch: &BatchOrder| {
        let edges: Vec<String> = batch
            .dependencies
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}",
                    routines[d.from].identity, routines[d.to].identity, d.reason
                )
            })
            .collect();
        (ordered_identities(routines, batch), edges)
    };
    let first = described(&routines, &order(&routines));
    for _ in 0..10 {
        rng.shuffle(&mut routines);
        assert_eq!(described(&routines, &order(&routines)), first);
    }
}

#[test]
fn a_thousand_routines_order_quickly() {
    let mut rng = fastrand::Rng::with_seed(1000);
    let mut routines = generated_batch(910, &mut rng);
    rng.shuffle(&mut routines);
    assert!(routines.len() >= 1000);
    let started = Instant::now();
    let batch = order(&routines);
    let elapsed = started.elapsed();
    println!(
        "ordered {} routines with {} dependencies in {elapsed:?}",
        routines.len(),
        batch.dependencies.len()
    );
    assert_eq!(batch.order.len(), routines.len());
    assert!(batch.dependencies.len() > 1000);
    assert_respects_dependencies(&batch);
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[test]
fn the_example_project_reconciles_before_adding_or_removing_arcs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/project");
    let project = crate::project::Project::load(&root).expect("example project loads");
    let routines = project.routines();
    let declared: Vec<Vec<String>> = routines
        .iter()
        .map(|r| project.declared_dependencies(r).to_vec())
        .collect();
    let batch = order_routines(routines, &declared).expect("orders");
    assert_eq!(
        ordered_identities(routines, &batch),
        [
            "public.reconcilemupstream(text)",
            "public.addarc(text, text, timestamp with time zone)",
            "public.addarc(text, text)",
            "public.removearc(text, text)",
        ]
    );
    assert_eq!(
        needs(routines, &batch, "public.addarc(text, text)"),
        [
            (
                "public.addarc(text, text, timestamp with time zone)".to_owned(),
                DependencyReason::CalledFromPlpgsql
            ),
            (
                "public.reconcilemupstream(text)".to_owned(),
                DependencyReason::Declared
            ),
        ]
    );
    assert_eq!(
        needs(routines, &batch, "public.removearc(text, text)"),
        [
            (
                "public.reconcilemupstream(text)".to_owned(),
                DependencyReason::Declared
            ),
            (
                "public.reconcilemupstream(text)".to_owned(),
                DependencyReason::CalledFromPlpgsql
            ),
        ]
    );
    assert!(batch.unresolved_declared.is_empty() && batch.not_analysed.is_empty());
}
