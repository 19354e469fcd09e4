-- Issue 17: the metrics' cost does not grow with history, and retention.
--
-- A scrape used to read every finished rollout. The controller now keeps its
-- figures in memory (crate::metrics::summary) and, on each scrape, reads only
-- what changed since the last one. This log is what changed: one row per
-- insert or update of a rollout that moves what the metrics see, with the
-- values the rollout had before (NULL for an insert), written by triggers so
-- no writer of `rollouts` can forget it. The reader deletes what it consumed.
CREATE TABLE rollout_changes (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id       TEXT NOT NULL,
    old_state        TEXT,
    old_exit_code    INTEGER,
    old_finished_at  INTEGER,
    -- 1 when the change is not one the summary can apply incrementally
    -- (a rollout's identity columns changed, or it was deleted).
    forced           INTEGER NOT NULL DEFAULT 0
);

CREATE TRIGGER rollouts_change_insert AFTER INSERT ON rollouts BEGIN
    INSERT INTO rollout_changes (rollout_id) VALUES (NEW.id);
END;

CREATE TRIGGER rollouts_change_update AFTER UPDATE ON rollouts
WHEN OLD.state IS NOT NEW.state OR OLD.exit_code IS NOT NEW.exit_code
  OR OLD.finished_at IS NOT NEW.finished_at OR OLD.created_at IS NOT NEW.created_at
  OR OLD.plan_id IS NOT NEW.plan_id OR OLD.kind IS NOT NEW.kind
  OR OLD.environment IS NOT NEW.environment OR OLD.id IS NOT NEW.id
BEGIN
    INSERT INTO rollout_changes (rollout_id, old_state, old_exit_code, old_finished_at, forced)
    VALUES (NEW.id, OLD.state, OLD.exit_code, OLD.finished_at,
            OLD.created_at IS NOT NEW.created_at OR OLD.plan_id IS NOT NEW.plan_id
            OR OLD.kind IS NOT NEW.kind OR OLD.environment IS NOT NEW.environment
            OR OLD.id IS NOT NEW.id);
END;

CREATE TRIGGER rollouts_change_delete AFTER DELETE ON rollouts BEGIN
    INSERT INTO rollout_changes (rollout_id, forced) VALUES (OLD.id, 1);
END;

-- `pgrollout_rollouts{kind,state}`: counted as rollouts are written, not by
-- a GROUP BY over all of them. Rows may reach 0; readers skip those.
CREATE TABLE rollout_state_counts (
    kind   TEXT NOT NULL,
    state  TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (kind, state)
);
INSERT INTO rollout_state_counts (kind, state, count)
SELECT kind, state, count(*) FROM rollouts GROUP BY kind, state;

CREATE TRIGGER rollout_state_counts_insert AFTER INSERT ON rollouts BEGIN
    INSERT OR IGNORE INTO rollout_state_counts (kind, state, count) VALUES (NEW.kind, NEW.state, 0);
    UPDATE rollout_state_counts SET count = count + 1 WHERE kind = NEW.kind AND state = NEW.state;
END;

CREATE TRIGGER rollout_state_counts_update AFTER UPDATE OF kind, state ON rollouts
WHEN OLD.kind IS NOT NEW.kind OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE rollout_state_counts SET count = count - 1 WHERE kind = OLD.kind AND state = OLD.state;
    INSERT OR IGNORE INTO rollout_state_counts (kind, state, count) VALUES (NEW.kind, NEW.state, 0);
    UPDATE rollout_state_counts SET count = count + 1 WHERE kind = NEW.kind AND state = NEW.state;
END;

CREATE TRIGGER rollout_state_counts_delete AFTER DELETE ON rollouts BEGIN
    UPDATE rollout_state_counts SET count = count - 1 WHERE kind = OLD.kind AND state = OLD.state;
END;

-- Retention ([store.retention], engine/retention.rs): rollouts whose step
-- events and job results were pruned, and when — what `status` and `log` say
-- in their place. The rollout's row, plan and audit entries stay.
CREATE TABLE pruned_rollouts (
    rollout_id   TEXT PRIMARY KEY,
    pruned_at    INTEGER NOT NULL,
    -- 1 when the result was kept because a gate still reads it.
    result_kept  INTEGER NOT NULL
);
-- How far pruning got, in (finished_at, id) order: each run starts there,
-- so it never reads what it pruned before.
CREATE TABLE retention_cursor (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    finished_at  INTEGER NOT NULL,
    rollout_id   TEXT NOT NULL
);
CREATE INDEX rollouts_by_finished ON rollouts(finished_at, id);
