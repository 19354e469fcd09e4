-- Faults (issue 8): a retry is a new attempt of the same job id, with its own
-- event sequence, and the offer is kept so a retry can send it again.
ALTER TABLE jobs ADD COLUMN offer BLOB;

CREATE TABLE job_events_by_attempt (
    job_id       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    step         TEXT NOT NULL,
    status       TEXT NOT NULL,
    message      TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    -- The controller acks by (job_id, attempt, seq) and drops duplicates here.
    PRIMARY KEY (job_id, attempt, seq)
);
INSERT INTO job_events_by_attempt SELECT job_id, seq, attempt, step, status, message, duration_ms, at FROM job_events;
DROP TABLE job_events;
ALTER TABLE job_events_by_attempt RENAME TO job_events;
