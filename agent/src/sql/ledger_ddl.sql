-- The ledger: one row per applied change, written in the same transaction as
-- the change itself. {schema} is replaced by the quoted ledger schema, which
-- exists by now (`ledger.rs` creates it only when missing: a DBA may have made
-- it for a role that has no CREATE on the database).
CREATE TABLE IF NOT EXISTS {schema}.ledger (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              text        NOT NULL,
    attempt             integer     NOT NULL,
    rollout_id          text        NOT NULL,
    plan_id             text        NOT NULL,
    action              text        NOT NULL,
    identity            text        NOT NULL,
    change              text        NOT NULL,
    previous_definition text,
    previous_owner      text,
    previous_acl        text,
    previous_comment    text,
    previous_sha256     text,
    new_definition      text,
    new_owner           text,
    new_acl             text,
    new_comment         text,
    new_sha256          text,
    actor               text        NOT NULL,
    trace_id            text,
    commit_sha          text,
    backup_path         text,
    backup_sha256       text,
    applied_at          timestamptz NOT NULL DEFAULT now(),
    -- Rollback, auto-rollback and enable rows: the row whose change they
    -- reverse. Older ledgers get these three columns from ledger_upgrade.sql.
    undoes_ledger_id    bigint,
    -- The identity after the change, when it differs (a disable's rename).
    new_identity        text,
    -- Where a rollback's definition came from, an emergency's reason, ...
    note                text,
    -- Deploy rows: SHA-256 of what the plan asked for (the statement and its
    -- grants). With new_* it tells an unchanged routine without re-creating
    -- it; older ledgers get it from ensure_ledger.
    source_sha256       text,
    -- The controller's audit log head when the job was offered (issue 13):
    -- an anchor of its audit chain held outside the controller. NULL when the
    -- job carried none. Older ledgers get these from ledger_upgrade.sql.
    audit_seq           bigint,
    audit_hash          text,
    -- A job touches each routine once: this is what makes a redelivered job
    -- unable to apply twice, even if the lookup before it were skipped.
    UNIQUE (job_id, identity)
);
CREATE INDEX IF NOT EXISTS ledger_identity_idx ON {schema}.ledger (identity, id);
