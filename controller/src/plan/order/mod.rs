//! The order in which a batch's routines are created: every routine after
//! the routines it needs.
//!
//! PostgreSQL checks a SQL-language body (string or `BEGIN ATOMIC`/`RETURN`)
//! and every parameter default when the routine is created, so what they
//! call must exist first. PL/pgSQL bodies are only checked for syntax then,
//! but ordering them the same way costs nothing and keeps the log readable.
//!
//! A dependency is either declared (a sidecar's `depends_on`, a name meaning
//! every overload of it in the batch) or inferred from the routine's own
//! text, read with PostgreSQL's parser (libpg_query), never by matching
//! patterns: the `FuncCall`s of SQL statements and expressions, including
//! `CALL`, and of every SQL expression a PL/pgSQL body embeds. `EXECUTE` of a
//! string is dynamic SQL and is not read. A call is resolved to the batch's
//! routines by name and argument count, then by argument types where they
//! can be known offline (`arg_types.rs`); calls to anything else (built-ins,
//! routines already in the database) and recursion are not dependencies.
//!
//! Ordering never invents a cycle (issue 15): only a dependency PostgreSQL
//! enforces at CREATE and that is certain is strong; a PL/pgSQL call, or a
//! call that several overloads may answer, is weak, and a cycle through a
//! weak dependency is broken deterministically. Whatever the order, the
//! agent's transaction commits only if every CREATE succeeded.
//!
//! The order is a topological sort that breaks ties by identity, so it does
//! not depend on the order the routines were listed in.

// The batch command (issue 5) is the caller; until it lands, only the tests
// are.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use pg_query::protobuf::node::Node as NodeKind;
use pgrollout_shared::routine::Routine;

/// `from` needs `to`: `to` is created first. Both are indices into the
/// routines given to [`order_routines`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dependency {
    pub from: usize,
    pub to: usize,
    pub reason: DependencyReason,
    /// A dependency PostgreSQL enforces at CREATE and that is certain: a
    /// declared one, or a call from a SQL body or a default that resolves
    /// to exactly one routine of the batch. The others (calls from PL/pgSQL
    /// bodies, which PostgreSQL does not check at CREATE, and calls that
    /// match several overloads by name and count alone) only guide the
    /// order: a cycle through one of them is broken, never an error.
    pub strong: bool,
}

/// Why one routine needs another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DependencyReason {
    /// The routine's sidecar lists it in `depends_on`.
    Declared,
    /// A SQL-language body calls it.
    CalledFromSql,
    /// A PL/pgSQL body calls it.
    CalledFromPlpgsql,
    /// A parameter's DEFAULT expression calls it.
    CalledFromDefault,
}

impl fmt::Display for DependencyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DependencyReason::Declared => "declared in depends_on",
            DependencyReason::CalledFromSql => "called from its SQL body",
            DependencyReason::CalledFromPlpgsql => "called from its PL/pgSQL body",
            DependencyReason::CalledFromDefault => "called from a parameter default",
        })
    }
}

/// A batch in deploy order, with the reasons for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOrder {
    /// Indices of the routines, each after everything it depends on.
    pub order: Vec<usize>,
    /// Every dependency found, one per (from, to, reason), sorted by the
    /// identities of `from` and `to`.
    pub dependencies: Vec<Dependency>,
    /// Declared names that designate no routine of the batch (they may
    /// already exist in the database), with the index of the declaring
    /// routine; worth a warning.
    pub unresolved_declared: Vec<(usize, String)>,
    /// Routines whose body could not be read for calls, and why (libpg_query
    /// cannot describe PL/pgSQL trigger functions); their declared
    /// dependencies still count.
    pub not_analysed: Vec<(usize, String)>,
}

impl BatchOrder {
    /// What routine `index` depends on, and why.
    #[cfg(test)]
    pub fn dependencies_of(&self, index: usize) -> impl Iterator<Item = &Dependency> {
        self.dependencies.iter().filter(move |d| d.from == index)
    }
}

/// Why a batch cannot be ordered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Routines that depend on each other, in dependency order, the first
    /// repeated at the end.
    #[error("cycle: {}", .cycle.join(" → "))]
    Cycle { cycle: Vec<String> },
    /// Definitions PostgreSQL's parser refuses; each would fail at CREATE.
    #[error("cannot read {}", describe_unreadable(.routines))]
    Unreadable { routines: Vec<UnreadableRoutine> },
}

/// A routine whose definition did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableRoutine {
    pub routine: String,
    pub message: String,
}

fn describe_unreadable(routines: &[UnreadableRoutine]) -> String {
    let each: Vec<String> = routines
        .iter()
        .map(|r| format!("{}: {}", r.routine, r.message))
        .collect();
    each.join("; ")
}

/// Reads every routine's calls, spread over the cores: parsing dominates
/// ordering a large batch. A routine whose content was read before in this
/// process is not parsed again (`memo.rs`). Results keep the routines'
/// order.
fn read_shapes_in_parallel(routines: &[Routine]) -> Vec<Result<Arc<Shape>, String>> {
    let keys: Vec<memo::Key> = routines.iter().map(memo::key_of).collect();
    let known = memo::lookup(&keys);
    let unknown: Vec<&Routine> = routines
        .iter()
        .zip(&known)
        .filter(|(_, known)| known.is_none())
        .map(|(routine, _)| routine)
        .collect();
    let mut read = read_in_parallel(&unknown).into_iter();
    let mut fresh = Vec::new();
    let shapes = known
        .into_iter()
        .zip(&keys)
        .map(|(known, key)| match known {
            Some(shape) => Ok(shape),
            None => {
                let shape = read
                    .next()
                    .unwrap_or_else(|| Err("internal error: a shape was not read".to_owned()))
                    .map(Arc::new);
                if let Ok(shape) = &shape {
                    fresh.push((*key, Arc::clone(shape)));
                }
                shape
            }
        })
        .collect();
    memo::keep(fresh);
    shapes
}

fn read_in_parallel(routines: &[&Routine]) -> Vec<Result<Shape, String>> {
    crate::project::in_parallel(routines, |routine| read_shape(routine))
}

/// Orders `routines` for deployment. `declared[i]` holds the names
/// `routines[i]` declares it depends on (`addarc`, `public.addarc` or
/// `addarc(text, text)`); a shorter `declared` means none for the rest.
pub fn order_routines(
    routines: &[Routine],
    declared: &[Vec<String>],
) -> Result<BatchOrder, OrderError> {
    let mut shapes = Vec::with_capacity(routines.len());
    let mut unreadable = Vec::new();
    for (routine, shape) in routines.iter().zip(read_shapes_in_parallel(routines)) {
        match shape {
            Ok(shape) => shapes.push(shape),
            Err(message) => {
                unreadable.push(UnreadableRoutine {
                    routine: routine.identity.to_string(),
                    message,
                });
                shapes.push(Arc::new(Shape::default()));
            }
        }
    }
    if !unreadable.is_empty() {
        return Err(OrderError::Unreadable {
            routines: unreadable,
        });
    }
    let batch = Batch::new(routines, &shapes);

    // (from, to, reason) → strong: one strong find makes it strong.
    let mut found: BTreeMap<(usize, usize, DependencyReason), bool> = BTreeMap::new();
    let mut unresolved_declared = Vec::new();
    for (from, shape) in shapes.iter().enumerate() {
        for call in &shape.calls {
            for (to, strong) in batch.resolve_call(from, call) {
                *found.entry((from, to, call.reason)).or_default() |= strong;
            }
        }
        for name in declared.get(from).into_iter().flatten() {
            match batch.resolve_declared(from, name) {
                Some(targets) => {
                    for to in targets {
                        found.insert((from, to, DependencyReason::Declared), true);
                    }
                }
                None => unresolved_declared.push((from, name.clone())),
            }
        }
    }
    found.retain(|(from, to, _), _| from != to);

    let mut dependencies: Vec<Dependency> = found
        .into_iter()
        .map(|((from, to, reason), strong)| Dependency {
            from,
            to,
            reason,
            strong,
        })
        .collect();
    dependencies.sort_by_key(|d| (batch.rank[d.from], batch.rank[d.to], d.reason));
    let order = batch
        .topological_order(&dependencies)
        .map_err(|cycle| OrderError::Cycle {
            cycle: cycle
                .into_iter()
                .map(|index| routines[index].identity.to_string())
                .collect(),
        })?;
    let not_analysed = shapes
        .iter()
        .enumerate()
        .filter_map(|(index, shape)| Some((index, shape.not_analysed.clone()?)))
        .collect();
    Ok(BatchOrder {
        order,
        dependencies,
        unresolved_declared,
        not_analysed,
    })
}

mod arg_types;
mod memo;
#[cfg(test)]
mod memo_tests;
#[cfg(test)]
mod overload_tests;
mod read;
#[cfg(test)]
mod tests;
mod walk;

use arg_types::ArgType;
use read::*;

/// A declared dependency, read like PostgreSQL reads the object of
/// `DROP ROUTINE`: unquoted names fold to lower case.
struct DeclaredName {
    schema: Option<String>,
    name: String,
    /// None when no argument list was written: every overload.
    arg_types: Option<Vec<TypeKey>>,
}

impl DeclaredName {
    fn parse(text: &str) -> Option<DeclaredName> {
        if text.trim().is_empty() || text.contains(';') {
            return None;
        }
        let parsed = pg_query::parse(&format!("DROP ROUTINE {text}"), 0).ok()?;
        let [raw] = parsed.protobuf.stmts.as_slice() else {
            return None;
        };
        let Some(NodeKind::DropStmt(drop)) = raw.stmt.as_ref()?.node.as_ref() else {
            return None;
        };
        let [object] = drop.objects.as_slice() else {
            return None;
        };
        let Some(NodeKind::ObjectWithArgs(object)) = &object.node else {
            return None;
        };
        let mut names = string_list(&object.objname)?;
        let name = names.pop()?;
        let schema = names.pop();
        let arg_types = if object.args_unspecified {
            None
        } else {
            let types = object.objargs.iter().map(|node| match &node.node {
                Some(NodeKind::TypeName(type_name)) => TypeKey::of(type_name),
                _ => None,
            });
            Some(types.collect::<Option<Vec<_>>>()?)
        };
        Some(DeclaredName {
            schema,
            name,
            arg_types,
        })
    }
}

/// The batch as calls and names are resolved against it.
struct Batch<'a> {
    routines: &'a [Routine],
    shapes: &'a [Arc<Shape>],
    by_name: HashMap<&'a str, Vec<usize>>,
    /// `rank[i]`: the position of routine `i` sorted by identity; the
    /// tie-break that makes the order independent of the input's.
    rank: Vec<usize>,
}

impl<'a> Batch<'a> {
    fn new(routines: &'a [Routine], shapes: &'a [Arc<Shape>]) -> Batch<'a> {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, routine) in routines.iter().enumerate() {
            by_name
                .entry(routine.identity.name.as_str())
                .or_default()
                .push(index);
        }
        let mut by_identity: Vec<usize> = (0..routines.len()).collect();
        by_identity.sort_by(|&a, &b| {
            let (a, b) = (&routines[a], &routines[b]);
            a.identity
                .cmp(&b.identity)
                .then_with(|| a.create_sql.cmp(&b.create_sql))
        });
        let mut rank = vec![0; routines.len()];
        for (position, &index) in by_identity.iter().enumerate() {
            rank[index] = position;
        }
        Batch {
            routines,
            shapes,
            by_name,
            rank,
        }
    }

    /// The routines a call from `caller` may reach, each with whether the
    /// dependency is strong (see [`Dependency::strong`]).
    ///
    /// Candidates have the same name, an argument count they accept (if
    /// known), and the schema if written. An unqualified name resolves
    /// through the caller's search path (its `SET search_path`, else its
    /// own schema, then `public`); when no routine there matches, every
    /// schema's matches count, as the database's search path is not known
    /// here. When every argument's type is known and exactly one candidate
    /// takes exactly those types, PostgreSQL calls that one (an exact match
    /// always wins); otherwise every candidate may be the one called.
    fn resolve_call(&self, caller: usize, call: &Call) -> Vec<(usize, bool)> {
        let candidates = self.name_matches(caller, call);
        let checked_at_create = matches!(
            call.reason,
            DependencyReason::CalledFromSql | DependencyReason::CalledFromDefault
        );
        if let Some(exact) = self.exact_match(caller, call, &candidates) {
            return vec![(exact, checked_at_create)];
        }
        let strong = checked_at_create && candidates.len() == 1;
        candidates
            .into_iter()
            .map(|index| (index, strong))
            .collect()
    }

    fn name_matches(&self, caller: usize, call: &Call) -> Vec<usize> {
        let count = call.arguments.as_ref().map(Vec::len);
        let candidates: Vec<usize> = self
            .by_name
            .get(call.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&index| {
                call.schema
                    .as_ref()
                    .is_none_or(|schema| *schema == self.routines[index].identity.schema)
                    && self.shapes[index].arity.accepts(count)
            })
            .collect();
        if call.schema.is_some() {
            return candidates;
        }
        for schema in &self.shapes[caller].search_path {
            let in_schema: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&index| self.routines[index].identity.schema == *schema)
                .collect();
            if !in_schema.is_empty() {
                return in_schema;
            }
        }
        candidates
    }

    /// The one candidate whose parameters are exactly the call's argument
    /// types, when all of them are known. A VARIADIC candidate is never an
    /// exact match: called without `VARIADIC`, it takes the element type.
    fn exact_match(&self, caller: usize, call: &Call, candidates: &[usize]) -> Option<usize> {
        let parameters = &self.shapes[caller].parameters;
        let types = call
            .arguments
            .as_ref()?
            .iter()
            .map(|argument| match argument {
                ArgType::Known(key) => Some(key),
                ArgType::Param(number) => parameters.get(number - 1)?.1.as_ref(),
                ArgType::Named(name) => parameters.iter().find(|(p, _)| p == name)?.1.as_ref(),
                ArgType::Unknown => None,
            })
            .collect::<Option<Vec<&TypeKey>>>()?;
        let mut exact = candidates.iter().copied().filter(|&index| {
            let shape = &self.shapes[index];
            shape.arity.max.is_some()
                && shape.input_types.len() == types.len()
                && shape.input_types.iter().zip(&types).all(|(a, b)| a == *b)
        });
        let first = exact.next()?;
        exact.next().is_none().then_some(first)
    }

    /// The routines a declared name designates, None when it designates
    /// none of the batch. The declaring routine's own name, written without
    /// argument types, adds nothing: a sidecar is shared by all overloads
    /// in its file.
    fn resolve_declared(&self, declarer: usize, text: &str) -> Option<Vec<usize>> {
        let declared = DeclaredName::parse(text)?;
        let designated: Vec<usize> = self
            .by_name
            .get(declared.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&index| {
                declared
                    .schema
                    .as_ref()
                    .is_none_or(|schema| *schema == self.routines[index].identity.schema)
                    && declared
                        .arg_types
                        .as_ref()
                        .is_none_or(|types| *types == self.shapes[index].input_types)
            })
            .collect();
        if designated.is_empty() {
            return None;
        }
        let own = &self.routines[declarer].identity;
        let is_own_name = |index: usize| {
            let identity = &self.routines[index].identity;
            identity.schema == own.schema && identity.name == own.name
        };
        Some(
            designated
                .into_iter()
                .filter(|&index| declared.arg_types.is_some() || !is_own_name(index))
                .collect(),
        )
    }

    /// Kahn's algorithm, always taking the ready routine of lowest rank.
    /// When every routine left waits for another, a weak dependency is
    /// given up: the lowest-ranked routine that waits only on weak ones
    /// goes next (deterministic, as ranks are). Only a cycle of strong
    /// dependencies is an error; it is returned, the shortest one found,
    /// in dependency order.
    fn topological_order(&self, dependencies: &[Dependency]) -> Result<Vec<usize>, Vec<usize>> {
        let count = self.routines.len();
        let mut needs: Vec<Vec<(usize, bool)>> = vec![Vec::new(); count];
        let mut needed_by: Vec<Vec<(usize, bool)>> = vec![Vec::new(); count];
        for dependency in dependencies {
            needs[dependency.from].push((dependency.to, dependency.strong));
            needed_by[dependency.to].push((dependency.from, dependency.strong));
        }
        for list in needs.iter_mut().chain(needed_by.iter_mut()) {
            // Strong first, so dedup keeps the strong one of a pair.
            list.sort_by_key(|&(index, strong)| (self.rank[index], !strong));
            list.dedup_by_key(|(index, _)| *index);
        }
        let mut waiting_on: Vec<usize> = needs.iter().map(Vec::len).collect();
        let mut strong_waiting_on: Vec<usize> = needs
            .iter()
            .map(|list| list.iter().filter(|(_, strong)| *strong).count())
            .collect();
        let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..count)
            .filter(|&index| waiting_on[index] == 0)
            .map(|index| Reverse((self.rank[index], index)))
            .collect();
        let mut placed = vec![false; count];
        let mut order = Vec::with_capacity(count);
        loop {
            while let Some(Reverse((_, index))) = ready.pop() {
                if placed[index] {
                    continue;
                }
                placed[index] = true;
                order.push(index);
                for &(dependant, strong) in &needed_by[index] {
                    if placed[dependant] {
                        continue;
                    }
                    waiting_on[dependant] -= 1;
                    if strong {
                        strong_waiting_on[dependant] -= 1;
                    }
                    if waiting_on[dependant] == 0 {
                        ready.push(Reverse((self.rank[dependant], dependant)));
                    }
                }
            }
            if order.len() == count {
                return Ok(order);
            }
            let next = (0..count)
                .filter(|&index| !placed[index] && strong_waiting_on[index] == 0)
                .min_by_key(|&index| self.rank[index]);
            match next {
                Some(index) => ready.push(Reverse((self.rank[index], index))),
                None => break,
            }
        }
        // Every routine left waits on a strong dependency of another one
        // left: following them must come round. Only strong ones count now.
        let strong_needs: Vec<Vec<usize>> = needs
            .iter()
            .map(|list| {
                list.iter()
                    .filter(|(_, strong)| *strong)
                    .map(|&(index, _)| index)
                    .collect()
            })
            .collect();
        let mut on_cycle: Vec<bool> = placed.iter().map(|placed| !placed).collect();
        // Peel off, repeatedly, the routines left that no other one left
        // needs: what remains holds every cycle and, in practice, little else.
        let mut needed: Vec<usize> = vec![0; count];
        for index in (0..count).filter(|&index| on_cycle[index]) {
            for &to in &strong_needs[index] {
                needed[to] += 1;
            }
        }
        let mut peel: Vec<usize> = (0..count)
            .filter(|&index| on_cycle[index] && needed[index] == 0)
            .collect();
        while let Some(index) = peel.pop() {
            on_cycle[index] = false;
            for &to in &strong_needs[index] {
                needed[to] -= 1;
                if needed[to] == 0 && on_cycle[to] {
                    peel.push(to);
                }
            }
        }
        Err(self.shortest_cycle(&strong_needs, &on_cycle))
    }

    /// A breadth-first search from each routine that may be on a cycle, in
    /// rank order, for the shortest way back to it. The first shortest
    /// cycle found starts at its lowest-ranked routine, so the answer does
    /// not depend on the input order.
    fn shortest_cycle(&self, needs: &[Vec<usize>], candidate: &[bool]) -> Vec<usize> {
        let mut starts: Vec<usize> = (0..needs.len()).filter(|&i| candidate[i]).collect();
        starts.sort_by_key(|&index| self.rank[index]);
        // The path, its first routine repeated at the end.
        let mut best: Vec<usize> = Vec::new();
        let mut came_from = vec![usize::MAX; needs.len()];
        for &start in &starts {
            came_from.fill(usize::MAX);
            // (routine, routines on the path from start to it, both counted)
            let mut queue = VecDeque::from([(start, 1)]);
            'search: while let Some((at, length)) = queue.pop_front() {
                if !best.is_empty() && length + 1 >= best.len() {
                    break;
                }
                for &next in &needs[at] {
                    if next == start {
                        let mut path = vec![start];
                        let mut step = at;
                        while step != start {
                            path.push(step);
                            step = came_from[step];
                        }
                        path.push(start);
                        path.reverse();
                        best = path;
                        break 'search;
                    }
                    if candidate[next] && came_from[next] == usize::MAX {
                        came_from[next] = at;
                        queue.push_back((next, length + 1));
                    }
                }
            }
            if best.len() == 3 {
                break;
            }
        }
        best
    }
}
