-- Issue 18, item 2: several controllers on one store. Each running
-- controller keeps a row here, its heartbeat renewed every few seconds; a
-- row whose heartbeat has expired is a dead controller. `epoch` counts the
-- starts under one id (a restarted controller is the same id, a new epoch).
CREATE TABLE IF NOT EXISTS controllers (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    epoch        INTEGER NOT NULL
);

-- Which controller offered the job (and follows it). NULL for jobs
-- recorded before this migration, or in the instant between recording the
-- job and claiming it: a starting controller settles those only when no
-- other controller is alive.
ALTER TABLE jobs ADD COLUMN controller_id TEXT;
