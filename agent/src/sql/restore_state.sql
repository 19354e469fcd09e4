-- What an exact restore compares against, for all routines at once: owner,
-- ACL, comment, the default ACL the owner would have (proacl NULL), and every
-- grantee the ACL names now (NULL for PUBLIC), which a rebuild revokes from.
-- $1: signatures or regprocedure texts that `to_regprocedure` reads.
SELECT p.oid IS NOT NULL                                    AS existed,
       p.oid::regprocedure::text                            AS identity,
       pg_get_functiondef(p.oid)                            AS definition,
       pg_get_userbyid(p.proowner)::text                    AS owner,
       p.proacl::text                                       AS acl,
       obj_description(p.oid, 'pg_proc')                    AS comment,
       acldefault('f', p.proowner)::text                    AS default_acl,
       ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL
                                  ELSE pg_get_userbyid(a.grantee)::text END
             FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a) AS grantees
FROM unnest($1::text[]) WITH ORDINALITY AS wanted(signature, position)
LEFT JOIN pg_proc p ON p.oid = to_regprocedure(wanted.signature)
ORDER BY wanted.position
