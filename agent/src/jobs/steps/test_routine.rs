//! A plan routine for the steps' unit tests: `app.<name>(<args>)`, a
//! function with its CREATE and nothing else; a test sets what it is about.

use pgrollout_shared::routine::{Routine, RoutineIdentity, RoutineKind};

pub fn routine(name: &str, arg_types: &[&str]) -> Routine {
    Routine {
        identity: RoutineIdentity {
            schema: "app".into(),
            name: name.into(),
            arg_types: arg_types.iter().map(|t| (*t).to_owned()).collect(),
        },
        kind: RoutineKind::Function,
        create_sql: format!(
            "CREATE OR REPLACE FUNCTION app.{name}({}) ...",
            arg_types.join(", ")
        ),
        companion_sql: Vec::new(),
        grants: Vec::new(),
        smoke_tests: Vec::new(),
        source_path: format!("procedures/{name}.sql"),
        depends_on: Vec::new(),
        perf_probe: None,
        pgtap: None,
        source_line: 1,
        search_path: vec!["app".into()],
        retire: None,
    }
}
