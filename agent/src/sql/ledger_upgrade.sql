-- Brings a ledger created before rollbacks were recorded (issue 6), or
-- before it held audit anchors (issue 13) or source hashes (issue 15), up to date. Run only when the columns are missing: ALTER TABLE takes an ACCESS
-- EXCLUSIVE lock even when there is nothing to add. {schema} is replaced by
-- the quoted ledger schema.
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS undoes_ledger_id bigint;
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS new_identity text;
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS note text;
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS audit_seq bigint;
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS audit_hash text;
ALTER TABLE {schema}.ledger ADD COLUMN IF NOT EXISTS source_sha256 text;
