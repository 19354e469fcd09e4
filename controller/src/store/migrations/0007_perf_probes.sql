-- Performance probes (the performance gate): for each plan and routine, the
-- medians of K timed calls on the old and on the new definition, measured
-- by an agent in rolled-back transactions. The PROD gate reads the latest
-- probe of the same plan id in the environment it promotes from.
CREATE TABLE perf_probes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id        TEXT NOT NULL,
    environment    TEXT NOT NULL,
    -- schema.name(argument types) as the plan writes it.
    routine        TEXT NOT NULL,
    rollout_id     TEXT NOT NULL REFERENCES rollouts(id),
    call_sql       TEXT NOT NULL,
    runs           INTEGER NOT NULL,
    -- NULL: the routine did not exist before the plan, nothing to compare with.
    old_median_us  INTEGER,
    new_median_us  INTEGER NOT NULL,
    -- Where the old definition came from ("live definition", "ledger #12").
    baseline       TEXT NOT NULL,
    recorded_at    INTEGER NOT NULL
);
CREATE INDEX perf_probes_by_plan ON perf_probes(plan_id, environment, routine, id);
