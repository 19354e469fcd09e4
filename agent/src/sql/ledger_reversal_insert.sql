-- One multi-row insert for every routine a rollback, disable or enable job
-- changed: like ledger_insert.sql, plus the plan and commit of each restored
-- version (they differ per routine) and the reversal columns.
INSERT INTO {schema}.ledger (
    job_id, attempt, rollout_id, action, actor, trace_id, backup_path, backup_sha256,
    audit_seq, audit_hash, plan_id, commit_sha, identity, change,
    previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
    new_definition, new_owner, new_acl, new_comment, new_sha256,
    undoes_ledger_id, new_identity, note)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $26, $27, r.*
FROM unnest($9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
            $18::text[], $19::text[], $20::text[], $21::text[], $22::text[],
            $23::bigint[], $24::text[], $25::text[])
     AS r(plan_id, commit_sha, identity, change,
          previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
          new_definition, new_owner, new_acl, new_comment, new_sha256,
          undoes_ledger_id, new_identity, note)
RETURNING id, identity
