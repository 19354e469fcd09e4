-- The gate verdicts each rollout passed, as JSON: [{"gate", "passed", "reason"}].
ALTER TABLE rollouts ADD COLUMN gates TEXT NOT NULL DEFAULT '[]';
