-- Issue 19: the jobs an agent's [approvals] policy refused, as the agent
-- reports them on every connection (it keeps them in its state dir, since
-- the controller that offered a job may have been a hostile one). One row per
-- (agent, job, attempt): each is audited once, as agent.refused_job.
CREATE TABLE IF NOT EXISTS agent_refusals (
    agent       TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    refused_at  INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (agent, job_id, attempt)
);
