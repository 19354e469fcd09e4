//! Ordering never invents a cycle (issue 15): overloads resolved by
//! argument types where they are known, weak dependencies given up to break
//! a cycle, only a cycle of strong ones an error.

use pgrollout_shared::proto;

use super::*;

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
        create_sql: create_sql.into(),
        source_path: format!("procedures/{name}.sql"),
        ..Default::default()
    })
    .expect("valid routine")
}

fn ordered(routines: &[Routine]) -> Vec<String> {
    let batch = order_routines(routines, &[]).expect("orders");
    batch
        .order
        .iter()
        .map(|&index| routines[index].identity.to_string())
        .collect()
}

/// The issue's family, in SQL or PL/pgSQL: `psql -1 -f` applies it in the
/// order written, so ordering must not call it a cycle.
fn d_family(language: &str) -> Vec<Routine> {
    let body = |expression: &str| match language {
        "sql" => format!("$$ SELECT {expression} $$"),
        _ => format!("$$ BEGIN RETURN {expression}; END $$"),
    };
    vec![
        routine(
            "public.d(text[])",
            &format!(
                "CREATE FUNCTION public.d(VARIADIC text[]) RETURNS text LANGUAGE {language} AS {}",
                body("d(array_to_string($1, ''))")
            ),
        ),
        routine(
            "public.d(anyelement)",
            &format!(
                "CREATE FUNCTION public.d(anyelement) RETURNS text LANGUAGE {language} AS {}",
                body("d($1::text)")
            ),
        ),
        routine(
            "public.d(text)",
            &format!(
                "CREATE FUNCTION public.d(text) RETURNS text LANGUAGE {language} AS {}",
                body("$1")
            ),
        ),
    ]
}

#[test]
fn the_overload_family_of_issue_15_orders_without_a_cycle() {
    for language in ["sql", "plpgsql"] {
        let routines = d_family(language);
        let order = ordered(&routines);
        assert_eq!(order[0], "public.d(text)", "{language}: {order:?}");
        let batch = order_routines(&routines, &[]).expect("orders");
        // `d($1::text)` is an exact match: d(anyelement) needs d(text) only.
        let anyelement = 1;
        let needs: Vec<usize> = batch
            .dependencies
            .iter()
            .filter(|d| d.from == anyelement)
            .map(|d| d.to)
            .collect();
        assert_eq!(needs, [2], "{language}");
        let mut shuffled = routines.clone();
        shuffled.reverse();
        assert_eq!(
            ordered(&shuffled),
            order,
            "{language}: input order matters not"
        );
    }
}

#[test]
fn a_cycle_through_a_weak_dependency_is_broken_deterministically() {
    // Mutually recursive PL/pgSQL: PostgreSQL checks neither call at CREATE.
    let plpgsql = vec![
        routine(
            "public.even(integer)",
            "CREATE FUNCTION public.even(n integer) RETURNS boolean LANGUAGE plpgsql AS \
             $$ BEGIN RETURN n = 0 OR odd(n - 1); END $$",
        ),
        routine(
            "public.odd(integer)",
            "CREATE FUNCTION public.odd(n integer) RETURNS boolean LANGUAGE plpgsql AS \
             $$ BEGIN RETURN n <> 0 AND even(n - 1); END $$",
        ),
    ];
    assert_eq!(
        ordered(&plpgsql),
        ["public.even(integer)", "public.odd(integer)"]
    );
    let mut reversed = plpgsql.clone();
    reversed.reverse();
    assert_eq!(ordered(&reversed), ordered(&plpgsql));

    // A SQL body whose call two overloads may answer (the argument's type
    // is another call's result) is weak too: `top` may call `pick(text)`,
    // which certainly calls `top`; the weak one gives way.
    let mixed = vec![
        routine(
            "public.pick(integer)",
            "CREATE FUNCTION public.pick(a integer) RETURNS integer LANGUAGE sql RETURN a",
        ),
        routine(
            "public.pick(text)",
            "CREATE FUNCTION public.pick(a text) RETURNS integer LANGUAGE sql \
             RETURN top() + 1",
        ),
        routine(
            "public.top()",
            "CREATE FUNCTION public.top() RETURNS integer LANGUAGE sql RETURN pick(length('x'))",
        ),
    ];
    let order = ordered(&mixed);
    let at = |identity: &str| order.iter().position(|o| o == identity).expect("ordered");
    assert!(at("public.pick(integer)") < at("public.top()"), "{order:?}");
    assert!(at("public.top()") < at("public.pick(text)"), "{order:?}");
}

#[test]
fn parameters_passed_on_have_their_declared_type() {
    let routines = vec![
        routine(
            "public.f(integer)",
            "CREATE FUNCTION public.f(a integer) RETURNS integer LANGUAGE sql RETURN a",
        ),
        routine(
            "public.f(text)",
            "CREATE FUNCTION public.f(a text) RETURNS integer LANGUAGE sql RETURN 1",
        ),
        routine(
            "public.by_number(text)",
            "CREATE FUNCTION public.by_number(text) RETURNS integer LANGUAGE sql AS 'SELECT f($1)'",
        ),
        routine(
            "public.by_name(integer)",
            "CREATE FUNCTION public.by_name(x integer) RETURNS integer LANGUAGE sql RETURN f(x)",
        ),
    ];
    let batch = order_routines(&routines, &[]).expect("orders");
    let needs = |from: usize| -> Vec<(usize, bool)> {
        batch
            .dependencies
            .iter()
            .filter(|d| d.from == from)
            .map(|d| (d.to, d.strong))
            .collect()
    };
    assert_eq!(needs(2), [(1, true)]);
    assert_eq!(needs(3), [(0, true)]);
}

#[test]
fn a_cycle_of_certain_sql_dependencies_is_still_an_error() {
    let routines = vec![
        routine(
            "public.a()",
            "CREATE FUNCTION public.a() RETURNS integer LANGUAGE sql RETURN b()",
        ),
        routine(
            "public.b()",
            "CREATE FUNCTION public.b() RETURNS integer LANGUAGE sql RETURN a()",
        ),
    ];
    assert_eq!(
        order_routines(&routines, &[]),
        Err(OrderError::Cycle {
            cycle: ["public.a()", "public.b()", "public.a()"]
                .map(String::from)
                .to_vec()
        })
    );
}
