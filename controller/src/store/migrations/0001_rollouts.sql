-- Plans, rollouts, jobs and every event an agent streams back.
CREATE TABLE plans (
    plan_id     TEXT PRIMARY KEY,
    label       TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    -- The plan as the wire carries it (prost-encoded), so what ran can be
    -- shown and re-sent byte for byte.
    content     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE rollouts (
    id           TEXT PRIMARY KEY,
    plan_id      TEXT NOT NULL REFERENCES plans(plan_id),
    kind         TEXT NOT NULL,
    environment  TEXT NOT NULL,
    zone         TEXT NOT NULL,
    target       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    state        TEXT NOT NULL,
    exit_code    INTEGER,
    message      TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX rollouts_by_environment ON rollouts(environment, created_at);

CREATE TABLE jobs (
    id           TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    rollout_id   TEXT NOT NULL REFERENCES rollouts(id),
    kind         TEXT NOT NULL,
    zone         TEXT NOT NULL,
    target       TEXT NOT NULL,
    agent_name   TEXT,
    state        TEXT NOT NULL,
    offered_at   INTEGER NOT NULL,
    accepted_at  INTEGER,
    finished_at  INTEGER,
    result       BLOB,
    PRIMARY KEY (id, attempt)
);
CREATE INDEX jobs_by_rollout ON jobs(rollout_id);

CREATE TABLE job_events (
    job_id       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    step         TEXT NOT NULL,
    status       TEXT NOT NULL,
    message      TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    -- The controller acks by (job_id, seq) and drops duplicates here.
    PRIMARY KEY (job_id, seq)
);
