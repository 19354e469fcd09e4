-- One multi-row insert for every routine a job changed, whatever the job
-- (deploy, retire, rollback, auto-rollback, disable, enable): one round
-- trip. $1-$8: the job's own columns; $9/$10: the audit anchor it carried
-- (NULL when none). Per row: the plan and commit of the version now in place
-- (a reversal's differ per routine), both sides of the change, the source
-- hash (deploys), whether the job's backup holds the routine (a routine a
-- deploy left untouched is not in its backup, so its row names none), and
-- the reversal columns (NULL for a deploy).
INSERT INTO {schema}.ledger (
    job_id, attempt, rollout_id, action, actor, trace_id, backup_path, backup_sha256,
    audit_seq, audit_hash, plan_id, commit_sha, identity, change,
    previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
    new_definition, new_owner, new_acl, new_comment, new_sha256, source_sha256,
    undoes_ledger_id, new_identity, note)
SELECT $1, $2, $3, $4, $5, $6,
       CASE WHEN r.backed_up THEN $7 END, CASE WHEN r.backed_up THEN $8 END, $9, $10,
       r.plan_id, r.commit_sha, r.identity, r.change,
       r.previous_definition, r.previous_owner, r.previous_acl, r.previous_comment, r.previous_sha256,
       r.new_definition, r.new_owner, r.new_acl, r.new_comment, r.new_sha256, r.source_sha256,
       r.undoes_ledger_id, r.new_identity, r.note
FROM unnest($11::text[], $12::text[], $13::text[], $14::text[],
            $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
            $20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[],
            $26::bool[], $27::bigint[], $28::text[], $29::text[])
     AS r(plan_id, commit_sha, identity, change,
          previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
          new_definition, new_owner, new_acl, new_comment, new_sha256, source_sha256,
          backed_up, undoes_ledger_id, new_identity, note)
RETURNING id, identity
