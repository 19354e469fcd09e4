-- Post-deploy watches (issue 7): what each one samples, its pre-deploy
-- baseline, its latest sample and verdict. Kept here so that a watch outlives
-- a controller restart; the samples in between are not kept, the latest is.
CREATE TABLE watches (
    id                TEXT PRIMARY KEY,
    environment       TEXT NOT NULL,
    procedure         TEXT NOT NULL,
    -- The sample job as agents get it (prost WatchSampleJob): names, probes.
    spec              BLOB NOT NULL,
    threshold_percent INTEGER NOT NULL,
    every_ms          INTEGER NOT NULL,
    min_calls         INTEGER NOT NULL,
    min_increase_us   INTEGER NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    ends_at           INTEGER NOT NULL,
    cancelled_at      INTEGER,
    cancelled_by      TEXT,
    -- The sample taken when the watch was created, before the deploy
    -- (prost WatchSample); the latest sample since, in the same form.
    baseline          BLOB NOT NULL,
    last_sample       BLOB,
    samples           INTEGER NOT NULL DEFAULT 0,
    -- watching | alerting | blind; ended and cancelled follow from the times.
    state             TEXT NOT NULL,
    reason            TEXT NOT NULL,
    -- Open conditions, one per line (`slow public.f(integer)`, …): a new one
    -- notifies; none after some is a recovery.
    conditions        TEXT NOT NULL DEFAULT '',
    -- Probes (routine and test) that passed at least once: only those can
    -- start failing.
    probes_passed     TEXT NOT NULL DEFAULT '',
    -- Sample attempts that failed in a row, and the latest one's reason.
    failed_samples    INTEGER NOT NULL DEFAULT 0,
    sample_error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX watches_by_environment ON watches(environment, ends_at);
