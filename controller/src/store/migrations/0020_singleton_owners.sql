-- Issue 18, item 2: the rule "only a dead controller's work" for the work
-- that is not a job. Which controller claimed a request's start (settled by
-- another only once that controller is dead), and which drives a fleet
-- rollout (halted by another only once its driver is dead). NULL for rows
-- written before this migration, or in the instant between recording a
-- fleet and naming its driver: a starting controller takes those only when
-- no other controller is alive.
ALTER TABLE pending_rollouts ADD COLUMN started_by TEXT;
ALTER TABLE fleet_rollouts ADD COLUMN controller_id TEXT;

-- One lease per singleton (the scheduler, watches, drift schedule,
-- retention): its holder (a controller's id and epoch), until when, and the
-- fencing token, incremented on every change of holder. Singleton writes
-- check holder and token in the same statement (store/leases.rs).
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    token      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
