-- One multi-row insert for every routine of a job: one round trip. A routine
-- the job left untouched (unchanged, not re-created) is not in its backup, so
-- its row names no backup ($24 false). $25/$26: the audit anchor the job
-- carried (NULL when none).
INSERT INTO {schema}.ledger (
    job_id, attempt, rollout_id, plan_id, action, actor, trace_id, commit_sha,
    backup_path, backup_sha256, audit_seq, audit_hash,
    identity, change,
    previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
    new_definition, new_owner, new_acl, new_comment, new_sha256, source_sha256)
SELECT $1, $2, $3, $4, $5, $6, $7, $8,
       CASE WHEN r.backed_up THEN $9 END, CASE WHEN r.backed_up THEN $10 END, $25, $26,
       r.identity, r.change,
       r.previous_definition, r.previous_owner, r.previous_acl, r.previous_comment, r.previous_sha256,
       r.new_definition, r.new_owner, r.new_acl, r.new_comment, r.new_sha256, r.source_sha256
FROM unnest($11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
            $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[],
            $24::bool[])
     AS r(identity, change,
          previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
          new_definition, new_owner, new_acl, new_comment, new_sha256, source_sha256,
          backed_up)
RETURNING id
