-- Every distinct audit anchor the ledger holds (issue 13), oldest first, with
-- the newest row that holds it. {schema} is the quoted ledger schema; the
-- caller checks that the anchor columns exist (a ledger no anchoring job has
-- written since the upgrade holds none).
SELECT audit_seq, audit_hash, max(id) AS ledger_id,
       (extract(epoch FROM max(applied_at)) * 1000)::bigint AS applied_at_ms
FROM {schema}.ledger
WHERE audit_seq IS NOT NULL AND audit_hash IS NOT NULL
GROUP BY audit_seq, audit_hash
ORDER BY audit_seq, ledger_id
