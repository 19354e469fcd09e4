-- Ledger rows, oldest first, with everything a rollback needs to restore
-- either side of each change. The columns added by ledger_upgrade.sql are read
-- through to_jsonb so that reading never needs the upgrade (history is
-- read-only). {schema} is the quoted ledger schema; {filter} one of the fixed
-- conditions in ledger_versions.rs, over $1..$3.
SELECT l.id,
       (extract(epoch FROM l.applied_at) * 1000)::bigint AS applied_at_ms,
       l.job_id, l.rollout_id, l.plan_id, l.action, l.identity, l.change,
       l.previous_definition, l.previous_owner, l.previous_acl, l.previous_comment, l.previous_sha256,
       l.new_definition, l.new_owner, l.new_acl, l.new_comment, l.new_sha256,
       l.actor, l.trace_id, l.commit_sha, l.backup_path, l.backup_sha256,
       (to_jsonb(l) ->> 'undoes_ledger_id')::bigint AS undoes_ledger_id,
       to_jsonb(l) ->> 'new_identity' AS new_identity,
       to_jsonb(l) ->> 'note' AS note
FROM {schema}.ledger l
WHERE {filter}
ORDER BY l.id
