-- Issue 18, item 2: every kind of job reaches its agent through the
-- controller holding the agent's stream.
--
-- A side-channel job (a watch's sample, a drift scan, the audit anchors'
-- read) records no rollout and no job: the job for an agent whose stream
-- another controller holds waits here, with its offer. The controller
-- holding the agent takes it by compare-and-set on `taken_by` (so it is
-- offered once, and never after `expires_at`), offers it, and writes the
-- agent's answer once: `answer` (its result, encoded), `declined` (its
-- reason) or `failure` (why the holder could not get an answer). The
-- requester reads the answer and deletes the row; deleting it before it was
-- taken withdraws it.
CREATE TABLE IF NOT EXISTS side_deliveries (
    job_id       TEXT PRIMARY KEY,
    zone         TEXT NOT NULL,
    agent_name   TEXT NOT NULL,
    offer        BLOB NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    taken_by     TEXT,
    taken_at     INTEGER,
    answer       BLOB,
    declined     TEXT,
    failure      TEXT
);


-- Fleet member selection on any controller sees every live controller's
-- agents: each stream's announced targets with their labels, as JSON
-- (`{"target": {"label": "value"}}`). '{}' for a stream recorded by an
-- older controller: its targets are still found by name (`targets`).
ALTER TABLE agent_streams ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';

-- A job's events keep what the agent reported beyond the columns above: the
-- smoke reports and the progress counts (`done` of `total`), as a JobEvent
-- carrying only those, encoded; NULL when it had none. The controller
-- following a job from another controller relays them as a local one does.
ALTER TABLE job_events ADD COLUMN detail BLOB;
