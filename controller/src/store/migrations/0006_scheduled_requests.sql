-- Scheduling by window: a deploy request outside its environment's window
-- waits in pending_rollouts with state 'scheduled' until run_at, when the
-- scheduler re-evaluates every gate and starts it (or reschedules it).
-- Request states: awaiting_approval | scheduled | starting | approved |
-- started | rejected | cancelled | refused.
-- run_at is derived from the window under the config in force: a restart
-- with another window recomputes it.
ALTER TABLE pending_rollouts ADD COLUMN run_at INTEGER;
-- The window(s) it waits for, as shown: "maintenance_window 02:00-04:00 UTC".
ALTER TABLE pending_rollouts ADD COLUMN window_text TEXT NOT NULL DEFAULT '';
-- Why it waits, why the last start attempt failed, or why it ended.
ALTER TABLE pending_rollouts ADD COLUMN note TEXT NOT NULL DEFAULT '';
-- Start attempts that found no agent (the first one is audited).
ALTER TABLE pending_rollouts ADD COLUMN start_attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX pending_rollouts_due ON pending_rollouts(state, run_at);
