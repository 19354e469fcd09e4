//! The pieces of a deploy that run inside the caller's transaction, for one
//! routine or a whole batch: back up, create, grant, record in the ledger.
//! Every piece costs a fixed number of round trips however many routines it
//! handles, except `create_routines` (one statement per routine).

use std::borrow::Cow;
use std::time::Instant;

use futures_util::future::Either;
use pgrollout_shared::proto::{AppliedRoutine, SmokeReport};
use pgrollout_shared::routine::{set_local_search_path_sql, Routine};

use super::backup::PendingBackup;
use super::statement::refused;
use super::unchanged;
use crate::backup::WrittenBackup;
use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::{
    self, DeployedKind, DeployedRow, LedgerJob, RoutineSnapshot, TargetConnection,
    RESET_TO_AGENT_SEARCH_PATH,
};

/// The signatures `to_regprocedure` resolves for these routines under the
/// agent's path (`sql::signatures`: a type the routine's path resolves is
/// spelled as the agent's does).
pub async fn signatures(
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<Vec<String>, tokio_postgres::Error> {
    sql::signatures::signatures_of(conn, routines).await
}

/// What a catalog query looking routines up by `oids` (padded with NULLs
/// where shorter) still needs as signatures: none when every oid is known —
/// rendering and sending a thousand signatures nobody reads cost the agent
/// milliseconds per query.
pub async fn signatures_unless_known(
    conn: &TargetConnection,
    routines: &[Routine],
    oids: &[u32],
) -> Result<Vec<String>, tokio_postgres::Error> {
    if oids.len() >= routines.len() {
        Ok(Vec::new())
    } else {
        signatures(conn, routines).await
    }
}

/// Every routine's current state, in one catalog query; by oid where
/// `oids` knows it (after the CREATEs), else by signature.
pub async fn snapshot(
    conn: &TargetConnection,
    routines: &[Routine],
    oids: &[u32],
) -> Result<Vec<RoutineSnapshot>, JobFailure> {
    let read = |e| JobFailure::database("cannot read the current definitions", e);
    let signatures = signatures_unless_known(conn, routines, oids)
        .await
        .map_err(read)?;
    sql::snapshot_routines_at(&conn.client, &signatures, oids)
        .await
        .map_err(read)
}

/// The state before a deploy: every routine's snapshot, which of them are
/// unchanged (left untouched), and the backup of the others.
#[derive(Clone)]
pub struct Before {
    pub previous: Vec<RoutineSnapshot>,
    pub untouched: Vec<bool>,
    /// Set by the apply: routines PostgreSQL could not replace, dropped and
    /// created again (ledger change `recreated`).
    pub recreated: Vec<bool>,
    /// `None` when every routine is unchanged: nothing to back up.
    pub written: Option<WrittenBackup>,
}

impl Before {
    /// The routines that will be created or replaced: all of `routines`
    /// as they are when none is unchanged (a first deploy), without a copy
    /// of each (~1 ms at a thousand, on the deploy's serial path).
    pub fn changed<'r>(&self, routines: &'r [Routine]) -> Cow<'r, [Routine]> {
        if !self.untouched.contains(&true) {
            return Cow::Borrowed(routines);
        }
        routines
            .iter()
            .zip(&self.untouched)
            .filter(|(_, untouched)| !**untouched)
            .map(|(routine, _)| routine.clone())
            .collect()
    }

    pub fn untouched_count(&self) -> usize {
        self.untouched.iter().filter(|u| **u).count()
    }

    /// Path and SHA-256 of the backup, empty when none was needed.
    pub fn backup_fields(&self) -> (String, String) {
        match &self.written {
            Some(written) => (written.path.display().to_string(), written.sha256.clone()),
            None => (String::new(), String::new()),
        }
    }

    /// The backup step's line.
    pub fn describe(&self) -> String {
        let unchanged = self.untouched_count();
        match &self.written {
            Some(written) if unchanged == 0 => {
                format!(
                    "{} (sha256 {}) verified",
                    written.path.display(),
                    written.sha256
                )
            }
            Some(written) => format!(
                "{} (sha256 {}) verified; {unchanged} unchanged routine(s) need none",
                written.path.display(),
                written.sha256
            ),
            None => format!("no backup needed: all {unchanged} routine(s) unchanged"),
        }
    }
}

/// Snapshots the routines, finds the unchanged ones, and writes the verified
/// backup file of the others, before anything changes.
pub async fn take_backup(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<Before, JobFailure> {
    let (mut before, pending) = start_backup(ctx, conn, routines).await?;
    if let Some(pending) = pending {
        before.written = Some(pending.finish().await?);
    }
    Ok(before)
}

/// [`take_backup`] up to the file: the snapshots read and the unchanged
/// routines found, the backup file of the others (`None` when every routine
/// is unchanged) being written and verified on a blocking thread. The caller
/// sets `written` from [`PendingBackup::finish`] before it records or
/// commits anything.
pub async fn start_backup(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<(Before, Option<PendingBackup>), JobFailure> {
    let previous = snapshot(conn, routines, &[]).await?;
    let untouched = if pgrollout_shared::retire::plan_retires(routines) {
        // Nothing to retire is refused before any backup is written; a
        // retirement is never "unchanged".
        check_retired_exist(ctx, routines, &previous)?;
        vec![false; routines.len()]
    } else {
        unchanged::untouched(ctx, conn, routines, &previous).await?
    };
    let to_write: Vec<RoutineSnapshot> = previous
        .iter()
        .zip(&untouched)
        .filter(|(_, untouched)| !**untouched)
        .map(|(snapshot, _)| snapshot.clone())
        .collect();
    let pending =
        (!to_write.is_empty()).then(|| super::backup::start_write(ctx, &ctx.job.id, to_write));
    Ok((
        Before {
            recreated: vec![false; previous.len()],
            previous,
            untouched,
            written: None,
        },
        pending,
    ))
}

/// Before anything is written: every routine to retire exists in the
/// catalog. One that does not is refused (exit 1), nothing changed.
fn check_retired_exist(
    ctx: &JobContext,
    routines: &[Routine],
    live: &[RoutineSnapshot],
) -> Result<(), JobFailure> {
    let missing: Vec<String> = routines
        .iter()
        .zip(live)
        .filter(|(_, live)| !live.existed)
        .map(|(routine, _)| routine.identity.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(refused(format!(
        "cannot retire {}: no such routine in target {} (already retired, or never there; `pgrollout history \
         <name> <environment>` shows what the ledger knows); nothing was changed",
        missing.join(", "),
        ctx.target.name
    )))
}

/// Statements sent in the same pipeline as the CREATEs, right before the
/// first and right after the last (the apply's `SAVEPOINT` and `RELEASE`):
/// no round trip of their own. Each runs as its own request, in order; after
/// a failed CREATE the one after fails too, in the aborted transaction, and
/// changes nothing (a savepoint whose release failed still exists).
#[derive(Clone, Copy, Default)]
pub struct Around<'a> {
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// Why [`create_routines`] stopped: the first request that failed.
#[derive(Debug)]
pub enum CreateFailed {
    /// The routine at this index (within `routines`): its CREATE, or the
    /// search path set for it.
    Routine(usize, tokio_postgres::Error),
    /// One of the [`Around`] statements.
    Around(String, tokio_postgres::Error),
}

/// Runs each CREATE in order, reporting progress as `done_before + i` of
/// `total`. The CREATEs are pipelined (sent ahead of their answers, in
/// order, each its own one-statement request); the first failure is the one
/// reported, since every later statement only meets the aborted transaction.
pub async fn create_routines(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    around: Around<'_>,
    (done_before, total): (usize, usize),
) -> Result<(), CreateFailed> {
    // Each routine's CREATE runs with its declared search path: a `SET
    // LOCAL` goes into the pipeline ahead of the first CREATE of each run of
    // routines sharing one path, and the agent's own path is set back after
    // the last, so what follows (the ledger's identities, grants) never sees
    // a plan's path. `routine_of[i]` is the routine request `i` belongs to.
    // `AROUND` marks the requests of `around`, which belong to no routine.
    const AROUND: usize = usize::MAX;
    let mut requests = Vec::with_capacity(routines.len() + 4);
    let mut routine_of = Vec::with_capacity(routines.len() + 4);
    let mut is_create = Vec::with_capacity(routines.len() + 4);
    if let Some(before) = around.before {
        requests.push(Either::Left(batch_execute_owned(conn, before.to_owned())));
        routine_of.push(AROUND);
        is_create.push(false);
    }
    // Every CREATE runs under its routine's path (`public` when it declares
    // none), set where it changes; the agent's own path comes back after.
    let mut current: Option<&[String]> = None;
    for (index, routine) in routines.iter().enumerate() {
        if current != Some(routine.search_path.as_slice()) {
            current = Some(routine.search_path.as_slice());
            let set = set_local_search_path_sql(&routine.search_path);
            requests.push(Either::Left(batch_execute_owned(conn, set)));
            routine_of.push(index);
            is_create.push(false);
        }
        requests.push(Either::Right(create_one(conn, routine)));
        routine_of.push(index);
        is_create.push(true);
    }
    if current.is_some() {
        let reset = batch_execute_owned(conn, RESET_TO_AGENT_SEARCH_PATH.to_owned());
        requests.push(Either::Left(reset));
        routine_of.push(routines.len().saturating_sub(1));
        is_create.push(false);
    }
    if let Some(after) = around.after {
        requests.push(Either::Left(batch_execute_owned(conn, after.to_owned())));
        routine_of.push(AROUND);
        is_create.push(false);
    }
    let mut created = 0;
    // Pipelined: the server answers in order, so the time between one
    // answer and the next is the later request's own (plus the wire).
    let mut last_answer = Instant::now();
    let progress = |index: usize, ()| {
        let now = Instant::now();
        if let Some(routine) = routines.get(routine_of[index]) {
            ctx.add_routine_time(&routine.identity.to_string(), now - last_answer);
        }
        last_answer = now;
        if is_create[index] {
            created += 1;
            ctx.progress("apply", done_before + created, total);
        }
    };
    sql::pipeline::run_in_order(requests, progress)
        .await
        .map_err(|(index, error)| match routine_of[index] {
            AROUND => {
                let statement = match around.before {
                    Some(before) if index == 0 => before,
                    _ => around.after.unwrap_or_default(),
                };
                CreateFailed::Around(statement.to_owned(), error)
            }
            routine => CreateFailed::Routine(routine, error),
        })
}

async fn batch_execute_owned(
    conn: &TargetConnection,
    sql: String,
) -> Result<(), tokio_postgres::Error> {
    conn.client.batch_execute(&sql).await
}

/// [`create_one`] with the routine's declared search path, for the callers
/// that apply one routine at a time (dry run, performance probe); the path
/// is set back afterwards, as after a pipelined apply.
pub async fn create_in_its_path(
    conn: &TargetConnection,
    routine: &Routine,
) -> Result<(), tokio_postgres::Error> {
    let set = set_local_search_path_sql(&routine.search_path);
    conn.client.batch_execute(&set).await?;
    let created = create_one(conn, routine).await;
    // After a failed CREATE the transaction is aborted and refuses this too;
    // its error is the CREATE's.
    let reset = conn.client.batch_execute(RESET_TO_AGENT_SEARCH_PATH).await;
    created.and(reset)
}

/// Why a routine's CREATE failed.
pub fn create_failure(routine: &Routine, error: tokio_postgres::Error) -> JobFailure {
    JobFailure::in_statement(
        format!(
            "applying {} from {} failed",
            routine.identity, routine.source_path
        ),
        error,
        &routine.create_sql,
    )
}

/// Runs one routine's CREATE. The extended protocol accepts exactly one
/// statement: a CREATE that smuggles a second statement after a semicolon is
/// refused here.
async fn create_one(
    conn: &TargetConnection,
    routine: &Routine,
) -> Result<(), tokio_postgres::Error> {
    conn.client
        .execute_typed(&routine.create_sql, &[])
        .await
        .map(|_| ())
}

/// A routine as the catalog resolved it right after its CREATE.
#[derive(Clone, Debug)]
pub struct Created {
    /// Everything after the CREATE looks the routine up by this oid rather
    /// than by resolving its signature text again (`to_regprocedure` parses
    /// every type name: most of a catalog query's time at a thousand).
    /// CREATE OR REPLACE keeps a routine's oid.
    pub oid: u32,
    /// `regprocedure` text: PostgreSQL's canonical identity.
    pub identity: String,
}

/// Fails unless every routine now exists; returns each one's oid and
/// canonical `regprocedure` text (a light query: no definitions are read
/// here).
pub async fn verify_created(
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<Vec<Created>, JobFailure> {
    let catalog = |e| JobFailure::database("cannot read the catalog", e);
    let signatures = signatures(conn, routines).await.map_err(catalog)?;
    let rows = conn
        .client
        .query_typed(
            "SELECT r.proc::oid, r.proc::text FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n), \
             LATERAL to_regprocedure(u.s) AS r(proc) ORDER BY n",
            &[(&signatures, tokio_postgres::types::Type::TEXT_ARRAY)],
        )
        .await
        .map_err(catalog)?;
    let created: Vec<Created> = routines
        .iter()
        .zip(rows)
        .map(|(routine, row)| {
            match (
                row.get::<_, Option<u32>>(0),
                row.get::<_, Option<String>>(1),
            ) {
                (Some(oid), Some(identity)) => Ok(Created { oid, identity }),
                _ => Err(not_created(routine)),
            }
        })
        .collect::<Result<_, _>>()?;
    one_routine_each(routines, &created)?;
    Ok(created)
}

/// Fails when two routines of the plan turned out to be one routine of the
/// target: argument types written differently that name the same types
/// there (`f(p items.id%TYPE)` and `f(p bigint)` where `items.id` is a
/// bigint, `f(mood)` and `f(public.mood)`). PostgreSQL's second CREATE
/// replaced the first; the caller rolls the transaction back.
fn one_routine_each(routines: &[Routine], created: &[Created]) -> Result<(), JobFailure> {
    let mut first_with: std::collections::HashMap<u32, usize> = Default::default();
    for (index, made) in created.iter().enumerate() {
        if let Some(&first) = first_with.get(&made.oid) {
            if routines[first].retire.is_none() && routines[index].retire.is_none() {
                return Err(refused(format!(
                    "{} ({}) and {} ({}) are one routine on this target, {}: their argument types \
                     name the same types here, so the second CREATE replaced the first; write \
                     types that differ, or keep one of them. Nothing was changed",
                    routines[first].identity,
                    routines[first].source_path,
                    routines[index].identity,
                    routines[index].source_path,
                    made.identity
                )));
            }
        }
        first_with.insert(made.oid, index);
    }
    Ok(())
}

/// The oids of `created`, for the lookups that follow the CREATEs.
pub fn oids(created: &[Created]) -> Vec<u32> {
    created.iter().map(|c| c.oid).collect()
}

fn not_created(routine: &Routine) -> JobFailure {
    JobFailure::deploy(format!(
        "the statement in {} did not create {} (check its schema and argument types)",
        routine.source_path, routine.identity
    ))
}

/// Applies every declared grant in one round trip, then the routines'
/// companion statements (`companions.rs`). The routine is named by
/// PostgreSQL's own `regprocedure` text and the grantee by the quoting
/// helper: nothing from the plan is pasted raw.
pub async fn grant(
    conn: &TargetConnection,
    routines: &[Routine],
    created: &[Created],
) -> Result<Granted, JobFailure> {
    let (statements, count) = grant_statements(routines, created);
    if count > 0 {
        conn.client
            .batch_execute(&statements)
            .await
            .map_err(|e| JobFailure::database("granting failed", e))?;
    }
    let companions = super::companions::apply(conn, routines).await?;
    Ok(Granted { count, companions })
}

/// The GRANT statements for `routines` and how many grants they make. The
/// routines that declare the same grants, in the same order, share one
/// statement per grant (`GRANT … ON ROUTINE a(…), b(…) TO …`): each routine
/// still gets its grants in its own order, so its ACL comes out exactly as
/// one statement per routine and grant would leave it, and a batch whose
/// routines share the project's grants costs the server one statement per
/// grant instead of one per routine and grant (issue 15 item 9).
fn grant_statements(routines: &[Routine], created: &[Created]) -> (String, usize) {
    let mut groups: Vec<(&[pgrollout_shared::routine::Grant], Vec<&str>)> = Vec::new();
    let mut group_of = std::collections::HashMap::new();
    let mut count = 0;
    for (routine, Created { identity, .. }) in routines.iter().zip(created) {
        if routine.grants.is_empty() {
            continue;
        }
        count += routine.grants.len();
        let grants = routine.grants.as_slice();
        let group = *group_of.entry(grants).or_insert_with(|| {
            groups.push((grants, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(identity.as_str());
    }
    let mut statements = String::new();
    for (grants, identities) in &groups {
        let routines = identities.join(", ");
        for grant in grants.iter() {
            statements.push_str(&format!(
                "GRANT {} ON ROUTINE {routines} TO {};\n",
                grant.privilege.keyword(),
                grant.grantee.to_sql()
            ));
        }
    }
    (statements, count)
}

/// What [`grant`] ran: the sidecars' grants, and the statements the files
/// keep next to their routines (`companions.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Granted {
    pub count: usize,
    pub companions: usize,
}

impl std::fmt::Display for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} grant(s) applied", self.count)?;
        if self.companions > 0 {
            write!(
                f,
                ", {} GRANT/REVOKE/COMMENT/OWNER statement(s) from the files",
                self.companions
            )?;
        }
        Ok(())
    }
}

/// Writes one ledger row per routine (one statement, which reads each
/// changed routine's new side from the catalog after the grants, so the
/// ledger records the ACL the routine really has); returns what changed and
/// the ledger ids. A routine left untouched gets an `unchanged` row too: the
/// job's rows are what makes a redelivery report instead of re-applying (an
/// all-unchanged job must not apply its old plan later over a newer change),
/// and `--to <plan>` finds the state each plan left there.
pub async fn record(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    oids: &[u32],
    before: &Before,
) -> Result<(Vec<AppliedRoutine>, Vec<i64>), JobFailure> {
    // The ledger's own check (and its DDL on first use) first: the insert
    // needs the table. One round trip, none on a ledger already current.
    ensure_ledger(ctx, conn).await?;
    let rows = ledger_rows(conn, routines, oids, before)?;
    insert_ledger_rows(ctx, conn, routines, rows, before).await
}

/// The ledger table, made or brought up to date on first use.
pub async fn ensure_ledger(ctx: &JobContext, conn: &TargetConnection) -> Result<(), JobFailure> {
    sql::ensure_ledger(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(ledger_error)
}

fn ledger_error(e: tokio_postgres::Error) -> JobFailure {
    JobFailure::database("ledger write failed", e)
}

/// What [`record`] writes for each routine, made without the database
/// (the agent's share of the ledger step: a digest of each routine's
/// source), so that a caller can make it while the server works on
/// something else.
pub fn ledger_rows<'a>(
    conn: &TargetConnection,
    routines: &[Routine],
    oids: &[u32],
    before: &'a Before,
) -> Result<Vec<DeployedRow<'a>>, JobFailure> {
    routines
        .iter()
        .enumerate()
        .map(|(index, routine)| {
            let retired = routine.retire.is_some();
            let kind = if retired {
                DeployedKind::Retired
            } else if before.untouched[index] {
                DeployedKind::Untouched
            } else if before.recreated[index] {
                DeployedKind::Recreated
            } else {
                DeployedKind::Live
            };
            // A row named by its previous side needs one (the others'
            // existence was checked after the CREATEs).
            if matches!(kind, DeployedKind::Retired | DeployedKind::Untouched)
                && before.previous[index].identity.is_none()
            {
                return Err(not_created(routine));
            }
            let oid = oids.get(index).copied();
            Ok(DeployedRow {
                kind,
                oid,
                // Rendered only where the catalog must resolve it.
                signature: (oid.is_none()
                    && matches!(kind, DeployedKind::Live | DeployedKind::Recreated))
                .then(|| sql::signatures::signature_of(conn, &routine.identity)),
                previous: &before.previous[index],
                source_sha256: (!retired).then(|| unchanged::source_sha256(routine)),
            })
        })
        .collect()
}

/// Writes `rows` ([`ledger_rows`] of `routines`) into a ledger
/// [`ensure_ledger`] made ready: one statement, which reads each changed
/// routine's new side from the catalog.
pub async fn insert_ledger_rows(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    rows: Vec<DeployedRow<'_>>,
    before: &Before,
) -> Result<(Vec<AppliedRoutine>, Vec<i64>), JobFailure> {
    let (backup_path, backup_sha256) = before.backup_fields();
    let job = LedgerJob {
        job_id: &ctx.job.id,
        attempt: i32::try_from(ctx.job.attempt).unwrap_or(i32::MAX),
        rollout_id: &ctx.job.rollout_id,
        action: "deploy",
        actor: &ctx.job.actor,
        trace_id: &ctx.job.trace.trace_id,
        backup_path: &backup_path,
        backup_sha256: &backup_sha256,
        audit_head: ctx.job.audit_head.as_ref(),
    };
    let recorded = sql::insert_deploy_rows(
        &conn.client,
        &ctx.target.ledger_schema,
        &job,
        &ctx.job.plan_id,
        &ctx.job.commit_sha,
        &rows,
    )
    .await
    .map_err(ledger_error)?;
    if recorded.len() != routines.len() {
        return Err(JobFailure::deploy(format!(
            "the ledger recorded {} row(s) for {} routine(s)",
            recorded.len(),
            routines.len()
        )));
    }
    let applied = routines
        .iter()
        .zip(&recorded)
        .map(|(routine, row)| AppliedRoutine {
            identity: routine.identity.to_string(),
            change: row.change.clone(),
            new_sha256: row.new_sha256.clone(),
            previous_sha256: row.previous_sha256.clone(),
        })
        .collect();
    Ok((applied, recorded.into_iter().map(|row| row.id).collect()))
}

/// One line for a smoke step: how many passed, and what failed.
pub fn smoke_summary(reports: &[SmokeReport]) -> String {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            let why: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.detail.as_str())
                .collect();
            format!("{} / {}: {}", r.routine, r.test, why.join("; "))
        })
        .collect();
    if failed.is_empty() {
        format!("{} smoke test(s) passed", reports.len())
    } else {
        format!(
            "{} of {} smoke test(s) failed: {}",
            failed.len(),
            reports.len(),
            failed.join(" | ")
        )
    }
}

/// Milliseconds since `started`, for outcomes.
pub fn elapsed_ms(started: Instant) -> u64 {
    crate::jobs::context::millis(started.elapsed())
}

#[cfg(test)]
mod tests {
    use pgrollout_shared::routine::{Grant, Grantee, Privilege};

    use super::*;

    fn routine(name: &str, grantees: &[&str]) -> Routine {
        Routine {
            grants: grantees
                .iter()
                .map(|to| Grant {
                    privilege: Privilege::Execute,
                    grantee: Grantee::parse(to).expect("a grantee"),
                })
                .collect(),
            ..super::super::test_routine::routine(name, &[])
        }
    }

    #[test]
    fn routines_with_the_same_grants_share_a_statement_per_grant_in_their_order() {
        let routines = [
            routine("a", &["reader", "writer"]),
            routine("b", &["writer", "reader"]),
            routine("c", &[]),
            routine("d", &["reader", "writer"]),
            routine("e", &["public"]),
        ];
        let created: Vec<Created> = routines
            .iter()
            .enumerate()
            .map(|(oid, r)| Created {
                oid: oid as u32,
                identity: format!("app.{}()", r.identity.name),
            })
            .collect();
        let (statements, count) = grant_statements(&routines, &created);
        assert_eq!(count, 7, "each routine's grants count, shared or not");
        assert_eq!(
            statements,
            "GRANT EXECUTE ON ROUTINE app.a(), app.d() TO \"reader\";\n\
             GRANT EXECUTE ON ROUTINE app.a(), app.d() TO \"writer\";\n\
             GRANT EXECUTE ON ROUTINE app.b() TO \"writer\";\n\
             GRANT EXECUTE ON ROUTINE app.b() TO \"reader\";\n\
             GRANT EXECUTE ON ROUTINE app.e() TO PUBLIC;\n"
        );
        assert_eq!(
            grant_statements(&routines[2..3], &created[2..3]),
            (String::new(), 0)
        );
    }
}
