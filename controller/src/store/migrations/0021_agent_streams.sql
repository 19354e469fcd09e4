-- Issue 18, item 2: which controller holds each agent's stream, so a job
-- created on any controller reaches its agent through the one holding it.
-- `stream_epoch` counts the agent's connections: each connect takes the next
-- one, and a disconnect removes the row only if it is still its own epoch,
-- so a late disconnect from an old controller never hides the new stream.
-- A row whose controller is dead (heartbeat expired, `controllers`) is
-- ignored by readers. `targets` is the agent's target names, one per line.
CREATE TABLE IF NOT EXISTS agent_streams (
    zone          TEXT NOT NULL,
    agent_name    TEXT NOT NULL,
    controller_id TEXT NOT NULL,
    stream_epoch  INTEGER NOT NULL,
    targets       TEXT NOT NULL,
    connected_at  INTEGER NOT NULL,
    PRIMARY KEY (zone, agent_name)
);

-- A job created on one controller for an agent whose stream another holds:
-- it waits here until the controller holding the agent takes it (compare-
-- and-set on `taken_by`, so it is offered once) and offers it. `declined`
-- is the agent's reason when it declined the offer (the rollout waiting on
-- another controller reads it); `taken_by` = '' withdraws a delivery the
-- requesting controller gave up on.
CREATE TABLE IF NOT EXISTS job_deliveries (
    job_id       TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    zone         TEXT NOT NULL,
    agent_name   TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    taken_by     TEXT,
    taken_at     INTEGER,
    declined     TEXT,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS job_deliveries_waiting ON job_deliveries (zone, agent_name)
    WHERE taken_by IS NULL;
