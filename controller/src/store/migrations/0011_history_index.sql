-- Issue 17: costs that do not grow with history.
--
-- The second rollback source was found by decoding up to 2,000 stored plans
-- and results on every rollback. It is now an index, kept as results are
-- recorded: one row per version (definition SHA-256) an environment received,
-- pointing at the routine's CREATE, which is stored once per distinct routine
-- (content-addressed by the SHA-256 of its encoded form). `seq` orders them
-- newest first, as the old search did. Existing stores are backfilled by the
-- migration's Rust step (store/history_index.rs), in the same transaction.
CREATE TABLE routine_defs (
    -- SHA-256 of `content`, hex.
    hash     TEXT PRIMARY KEY,
    -- The routine as the plan carries it (prost pgrollout.v1.Routine).
    content  BLOB NOT NULL
);

CREATE TABLE routine_versions (
    environment        TEXT NOT NULL,
    definition_sha256  TEXT NOT NULL,
    schema_name        TEXT NOT NULL,
    name               TEXT NOT NULL,
    plan_id            TEXT NOT NULL,
    commit_sha         TEXT NOT NULL,
    rollout_id         TEXT NOT NULL,
    routine_hash       TEXT NOT NULL REFERENCES routine_defs(hash),
    -- Bumped each time a newer result records the same version.
    seq                INTEGER NOT NULL,
    PRIMARY KEY (environment, definition_sha256)
);
CREATE INDEX routine_versions_by_name ON routine_versions(environment, name, seq);
-- The next `seq` is max(seq) + 1: read from this index, not a scan.
CREATE INDEX routine_versions_by_seq ON routine_versions(seq);

-- `audit --since` reads from a time on, not the whole log.
CREATE INDEX audit_by_at ON audit_log(at);
-- `rollouts` (newest first, optionally by state) and the metrics' window.
CREATE INDEX rollouts_by_created ON rollouts(created_at);
CREATE INDEX rollouts_by_state ON rollouts(state, created_at);
-- The promotion and tests-passed gates: a plan's deploys in one environment.
CREATE INDEX rollouts_by_plan ON rollouts(plan_id, environment, created_at);
-- A request settled after a crash finds its rollout by trace id.
CREATE INDEX rollouts_by_trace ON rollouts(trace_id);
-- Recovery at start-up and the scheduler's jobs still out.
CREATE INDEX jobs_by_state ON jobs(state);

-- What each environment runs now of each routine, as far as the controller
-- knows (the performance baseline, engine/perf_baseline.rs): set by every
-- successful result that applied or restored the routine. `routine_key` is
-- the identity without a `public.` prefix or quotes, since a restore names
-- routines by `regprocedure` text; `sha256` is '' once it was dropped.
CREATE TABLE running_routines (
    environment  TEXT NOT NULL,
    routine_key  TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    plan_id      TEXT NOT NULL,
    rollout_id   TEXT NOT NULL,
    PRIMARY KEY (environment, routine_key)
);
