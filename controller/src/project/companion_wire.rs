//! The controller's edge check of a plan's companion statements (issue 15),
//! for a plan received over the wire: a hand-made client skips the CLI's
//! parse, so what the CLI checked against the file is checked here again
//! against the plan.
//!
//! Each statement must be one GRANT/REVOKE EXECUTE, COMMENT ON, ALTER …
//! OWNER TO or ALTER … SET|SECURITY|COST… of routines (`companion::
//! read_attached`), and every routine it names must be a routine of the
//! same plan from the same source file — the one it travels with among
//! them. Otherwise a deployer's certificate could attach `ALTER FUNCTION
//! other() SECURITY DEFINER` (or `OWNER TO`, or a `GRANT`) to any routine
//! and change a routine the plan does not back up, ledger or roll back.
//! Names resolve as the CLI resolves them in the file: an unqualified name
//! is in the first schema of the routine's search path, the schema its
//! CREATE lands in (the agent runs the statement with that path, and with
//! `pg_catalog` after it, so a built-in of the same signature cannot be
//! the one PostgreSQL picks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use pgrollout_shared::routine::{quote_identifier, Routine, CODE_DEFAULT_SEARCH_PATH};

use super::checked_sql::{key_of, Check, Key, MAX_ENTRIES};
use super::companion::{self, kind_word, shown_name as shown, NamedRoutine};
use super::parse_sql::shortened;
use super::routine_name::{RoutineName, Signature};

/// Fails on the first companion statement of `routines` that is not one of
/// the accepted kinds or names a routine outside the plan or its file; the
/// message names the routine it travels with and the statement.
pub fn check_plan(routines: &[Routine]) -> Result<(), String> {
    if routines
        .iter()
        .all(|routine| routine.companion_sql.is_empty())
    {
        return Ok(());
    }
    let mut by_file: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, routine) in routines.iter().enumerate() {
        if routine.retire.is_none() {
            by_file.entry(&routine.source_path).or_default().push(index);
        }
    }
    let mut signatures: HashMap<usize, Signature> = HashMap::new();
    for (index, routine) in routines.iter().enumerate() {
        for statement in &routine.companion_sql {
            let at = || {
                format!(
                    "{} ({}): companion statement {}",
                    routine.identity,
                    routine.source_path,
                    shortened(statement)
                )
            };
            let named = names_in(statement).map_err(|why| format!("{}: {why}", at()))?;
            let file = by_file
                .get(routine.source_path.as_str())
                .map_or(&[][..], Vec::as_slice);
            let mut names_itself = false;
            for wanted in named.iter() {
                let found = resolve(wanted, routine, file, routines, &mut signatures)
                    .map_err(|why| format!("{}: {why}", at()))?;
                names_itself |= found == index;
            }
            if !names_itself {
                return Err(format!(
                    "{}: it travels with {} but does not name it; a companion statement goes with \
                     the routines it acts on",
                    at(),
                    routine.identity
                ));
            }
        }
    }
    Ok(())
}

/// The plan routine (an index into `routines`, among `file`) that `wanted`,
/// written in a statement travelling with `routine`, designates.
fn resolve(
    wanted: &NamedRoutine,
    routine: &Routine,
    file: &[usize],
    routines: &[Routine],
    signatures: &mut HashMap<usize, Signature>,
) -> Result<usize, String> {
    let default_schema = routine
        .search_path
        .first()
        .map_or(CODE_DEFAULT_SEARCH_PATH, String::as_str);
    let name = RoutineName {
        schema: Some(
            wanted
                .name
                .schema
                .clone()
                .unwrap_or_else(|| default_schema.to_owned()),
        ),
        ..wanted.name.clone()
    };
    let mut matching = Vec::new();
    for &candidate in file {
        let signature = match signatures.get(&candidate) {
            Some(signature) => signature,
            None => {
                let signature = signature_of(&routines[candidate])?;
                signatures.entry(candidate).or_insert(signature)
            }
        };
        if name.matches(signature) {
            matching.push(candidate);
        }
    }
    let shown = shown(&name);
    let found = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "it acts on {shown}, which is not a routine this plan deploys from {}: a \
                 companion statement may act only on routines of its plan and file",
                routine.source_path
            ))
        }
        several => {
            return Err(format!(
                "it names {shown}, which matches {} routines of this plan: write the argument \
                 types",
                several.len()
            ))
        }
    };
    if let Some(kind) = wanted.kind {
        if routines[found].kind != kind {
            return Err(format!(
                "it names {} as a {}, but the plan creates it as a {}",
                routines[found].identity,
                kind_word(kind),
                kind_word(routines[found].kind)
            ));
        }
    }
    Ok(found)
}

/// A plan routine's identity as the file's names are matched against it:
/// argument types rendered as PostgreSQL's parser reads them, without
/// modifiers (`numeric(10,2)` is `numeric` in a signature). The CLI writes
/// an identity's types in that rendering, modifiers kept, so only types with
/// a modifier — a parenthesis — are parsed again (a thousand routines with
/// companions would otherwise cost a thousand parses on every deploy); any
/// other spelling in a hand-made plan simply matches nothing and is refused.
fn signature_of(routine: &Routine) -> Result<Signature, String> {
    let identity = &routine.identity;
    if !identity.arg_types.iter().any(|t| t.contains('(')) {
        return Ok(Signature {
            schema: identity.schema.clone(),
            name: identity.name.clone(),
            arg_types: identity.arg_types.clone(),
        });
    }
    let text = format!(
        "{}.{}({})",
        quote_identifier(&identity.schema),
        quote_identifier(&identity.name),
        identity.arg_types.join(", ")
    );
    let parsed = RoutineName::parse(&text)
        .map_err(|why| format!("cannot read the identity {identity} ({why})"))?;
    Ok(Signature {
        schema: identity.schema.clone(),
        name: identity.name.clone(),
        arg_types: parsed.arg_types.unwrap_or_default(),
    })
}

/// The routines a companion statement names, read once per text for the
/// life of the process (a batch's plan is checked again at every
/// environment it goes to: PostgreSQL's parser is most of the check).
fn names_in(statement: &str) -> Result<Arc<[NamedRoutine]>, String> {
    static READ: OnceLock<Mutex<HashMap<Key, Arc<[NamedRoutine]>>>> = OnceLock::new();
    let read = READ.get_or_init(Mutex::default);
    let key = key_of(Check::Companion, statement);
    if let Some(named) = read
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(named.clone());
    }
    let named: Arc<[NamedRoutine]> = companion::read_wire(statement)?.into();
    let mut read = read.lock().unwrap_or_else(PoisonError::into_inner);
    if read.len() >= MAX_ENTRIES {
        read.clear();
    }
    read.insert(key, named.clone());
    Ok(named)
}
