-- Issue 20: the latest drift scan of each environment (and of each set of
-- routine names asked about), so `pgrollout drift <env> --cached` answers
-- without an agent and a new scan can tell new drift from known drift. One
-- row per (environment, scope), replaced by the next scan: its size does not
-- grow with history. IF NOT EXISTS: a store rewound to an older version for
-- a test of an earlier migration keeps this table.
CREATE TABLE IF NOT EXISTS drift_scans (
    environment TEXT    NOT NULL,
    -- The routine names the scan was limited to, sorted, comma-joined; '' for all.
    scope       TEXT    NOT NULL,
    scanned_at  INTEGER NOT NULL,
    -- pgrollout.v1.DriftResponse, encoded.
    response    BLOB    NOT NULL,
    PRIMARY KEY (environment, scope)
);
