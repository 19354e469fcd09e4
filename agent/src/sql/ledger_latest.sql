-- The latest ledger row of each identity ($1, regprocedure texts; NULL for a
-- routine that does not exist yet), in the order asked: what the ledger says
-- each routine should look like now, and the plan source that produced it.
-- One index probe per identity (ledger_identity_idx). source_sha256 is read
-- through to_jsonb so a ledger from before it needs no upgrade to be read.
SELECT l.source_sha256, l.new_sha256, l.new_owner, l.new_acl, l.new_comment
FROM unnest($1::text[]) WITH ORDINALITY AS wanted(identity, position)
LEFT JOIN LATERAL (
    SELECT to_jsonb(x) ->> 'source_sha256' AS source_sha256,
           x.new_sha256, x.new_owner, x.new_acl, x.new_comment
    FROM {schema}.ledger x
    WHERE x.identity = wanted.identity
    ORDER BY x.id DESC
    LIMIT 1
) l ON true
ORDER BY wanted.position
