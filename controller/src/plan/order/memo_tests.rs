//! The process-wide memo of shapes never changes an order: a routine whose
//! content changed is read again, whatever its identity.

use pgrollout_shared::proto;

use super::*;

fn routine(name: &str, body: &str, search_path: &[&str]) -> Routine {
    let mut routine = Routine::try_from(proto::Routine {
        schema: "memo".into(),
        name: name.into(),
        create_sql: format!(
            "CREATE OR REPLACE FUNCTION memo.{name}() RETURNS int LANGUAGE sql AS $$ {body} $$"
        ),
        source_path: format!("procedures/{name}.sql"),
        ..Default::default()
    })
    .expect("valid routine");
    routine.search_path = search_path.iter().map(|s| (*s).to_owned()).collect();
    routine
}

/// `(dependent, dependency)` names of the batch's order.
fn edges(routines: &[Routine]) -> Vec<(String, String)> {
    let order = order_routines(routines, &[]).expect("orders");
    order
        .dependencies
        .iter()
        .map(|d| {
            (
                routines[d.from].identity.name.clone(),
                routines[d.to].identity.name.clone(),
            )
        })
        .collect()
}

#[test]
fn a_routine_with_new_content_is_read_again() {
    let before = [
        routine("memo_a", "SELECT memo_b()", &[]),
        routine("memo_b", "SELECT 1", &[]),
    ];
    let after = [
        routine("memo_a", "SELECT 1", &[]),
        routine("memo_b", "SELECT memo_a()", &[]),
    ];
    for _ in 0..2 {
        assert_eq!(edges(&before), [("memo_a".into(), "memo_b".into())]);
        assert_eq!(edges(&after), [("memo_b".into(), "memo_a".into())]);
    }
}

#[test]
fn the_same_text_with_another_search_path_is_read_again() {
    // `target()` is memo.target or other.target, depending on the path.
    let mut other = routine("memo_target", "SELECT 2", &[]);
    other.identity.schema = "other".into();
    other.create_sql = other
        .create_sql
        .replace("memo.memo_target", "other.memo_target");
    let batch = |path: &[&str]| {
        vec![
            routine("memo_caller", "SELECT memo_target()", path),
            routine("memo_target", "SELECT 1", &[]),
            other.clone(),
        ]
    };
    for _ in 0..2 {
        for (path, schema) in [(&["other"][..], "other"), (&["memo"][..], "memo")] {
            let routines = batch(path);
            let order = order_routines(&routines, &[]).expect("orders");
            let targets: Vec<String> = order
                .dependencies
                .iter()
                .map(|d| routines[d.to].identity.schema.clone())
                .collect();
            assert_eq!(targets, [schema], "search path {path:?}");
        }
    }
}
