-- Issue 15, item 9: a job's routine versions (`routine_versions`,
-- `routine_defs`) are indexed after its result is relayed to the operator,
-- in a transaction of their own: on a thousand-routine batch the index was
-- the slowest write on the operator's path. The result is recorded with
-- `versions_pending = 1`; the index's transaction clears it by
-- compare-and-set, and a controller starting indexes whatever one that
-- stopped in between left marked.
ALTER TABLE jobs ADD COLUMN versions_pending INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS jobs_versions_pending ON jobs (versions_pending)
    WHERE versions_pending = 1;
