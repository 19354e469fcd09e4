-- Issue 23: a performance probe times the version the target environment
-- (PROD) runs now as its OLD definition, and a failed probe is recorded as
-- a failure, not skipped.
-- target_environment: the environment whose running version was timed
-- ('' for probes that timed this database's own old definition, which no
-- target's gate accepts); baseline_sha256: that version's definition hash
-- ('' when the target runs none); error: why the probe could not measure.
ALTER TABLE perf_probes ADD COLUMN target_environment TEXT NOT NULL DEFAULT '';
ALTER TABLE perf_probes ADD COLUMN baseline_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE perf_probes ADD COLUMN error TEXT NOT NULL DEFAULT '';
CREATE INDEX perf_probes_by_target ON perf_probes(plan_id, environment, routine, target_environment, id);

-- A watch's absolute bound on the mean time per call (`alert create
-- --max-time`), in microseconds; 0: none. It alerts without a baseline.
ALTER TABLE watches ADD COLUMN max_time_us INTEGER NOT NULL DEFAULT 0;
