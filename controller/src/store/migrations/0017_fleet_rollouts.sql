-- Issue 24: a fleet rollout — one plan over a set of targets in waves. Each
-- target runs as an ordinary rollout (its own row in `rollouts`, its job,
-- events and result); these tables tie them together: the set as it was
-- resolved when the rollout started, each target's wave and state.
CREATE TABLE IF NOT EXISTS fleet_rollouts (
    id          TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    plan_id     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    -- halt | continue | rollback: what a failed target does to the rest
    policy      TEXT NOT NULL,
    -- running | succeeded | failed | halted | rolled_back
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);

CREATE TABLE IF NOT EXISTS fleet_targets (
    fleet_id   TEXT NOT NULL REFERENCES fleet_rollouts (id),
    position   INTEGER NOT NULL,
    zone       TEXT NOT NULL,
    target     TEXT NOT NULL,
    -- 0 is the canary wave
    wave       INTEGER NOT NULL,
    -- pending | running | succeeded | failed | unknown | rolled_back
    state      TEXT NOT NULL,
    -- the target's latest rollout; NULL while untouched
    rollout_id TEXT,
    exit_code  INTEGER,
    message    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (fleet_id, position)
);

CREATE INDEX IF NOT EXISTS fleet_targets_rollout ON fleet_targets (rollout_id);
