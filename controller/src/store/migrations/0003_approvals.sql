-- Deploy requests waiting for approval, and every approval or rejection.
-- An approval is bound to the request's plan id: a changed plan is a new
-- request, so nothing approved before carries over to it.
CREATE TABLE pending_rollouts (
    request_id        TEXT PRIMARY KEY,
    environment       TEXT NOT NULL,
    plan_id           TEXT NOT NULL REFERENCES plans(plan_id),
    actor             TEXT NOT NULL,
    trace_id          TEXT NOT NULL,
    continue_on_error INTEGER NOT NULL,
    ticket            TEXT NOT NULL,
    runbook           TEXT NOT NULL,
    rollback_plan     TEXT NOT NULL,
    -- awaiting_approval | approved | rejected
    state             TEXT NOT NULL,
    rollout_id        TEXT,
    created_at        INTEGER NOT NULL,
    decided_at        INTEGER
);

CREATE TABLE approvals (
    request_id  TEXT NOT NULL REFERENCES pending_rollouts(request_id),
    plan_id     TEXT NOT NULL,
    approver    TEXT NOT NULL,
    role        TEXT NOT NULL,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (request_id, approver, role)
);
