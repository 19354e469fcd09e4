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
    offer        BYTEA NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    taken_by     TEXT,
    taken_at     BIGINT,
    answer       BYTEA,
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
ALTER TABLE job_events ADD COLUMN detail BYTEA;

-- A controller following a job another controller offered is woken when the
-- job's progress changes (its claim, an event, its result, a decline, a
-- side-channel job's answer) by a NOTIFY on `pgrollout_job_progress` whose
-- payload is the job id (sent on commit); it still reads the store on a
-- slower tick, so a lost notification only delays it.
CREATE OR REPLACE FUNCTION pgrollout_notify_job_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgrollout_job_progress', NEW.job_id);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pgrollout_notify_job_row_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgrollout_job_progress', NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER job_progress_claim_or_result AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.accepted_at IS DISTINCT FROM NEW.accepted_at OR OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION pgrollout_notify_job_row_progress();
CREATE TRIGGER job_progress_event AFTER INSERT ON job_events FOR EACH ROW
    EXECUTE FUNCTION pgrollout_notify_job_progress();
CREATE TRIGGER job_progress_declined AFTER UPDATE OF declined ON job_deliveries FOR EACH ROW
    WHEN (NEW.declined IS NOT NULL)
    EXECUTE FUNCTION pgrollout_notify_job_progress();
