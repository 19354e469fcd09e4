-- One multi-row insert for every routine of a job: one round trip.
INSERT INTO {schema}.ledger (
    job_id, attempt, rollout_id, plan_id, action, actor, trace_id, commit_sha,
    backup_path, backup_sha256, audit_seq, audit_hash,
    identity, change,
    previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
    new_definition, new_owner, new_acl, new_comment, new_sha256)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $23, $24, r.*
FROM unnest($11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
            $18::text[], $19::text[], $20::text[], $21::text[], $22::text[])
     AS r(identity, change,
          previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
          new_definition, new_owner, new_acl, new_comment, new_sha256)
RETURNING id
