-- The audit log: append-only, each entry chained to the previous one by
-- SHA-256, so an edited or deleted entry breaks the chain.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    rollout_id   TEXT,
    environment  TEXT,
    procedure    TEXT,
    trace_id     TEXT,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_by_rollout ON audit_log(rollout_id);
