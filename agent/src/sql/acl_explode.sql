-- Each aclitem of each wanted ACL, in order: grantee (NULL for PUBLIC),
-- grantor, privilege, grant option, and whether this session may act as the
-- grantor (SET ROLE), which is how a grantor other than the owner is kept.
-- A NULL ACL means PostgreSQL's default for the owner. A role that no longer
-- exists fails the casts, naming the role, before anything has changed.
-- $1: ACLs as text; $2: their owners (NULL: the routine is to be absent);
-- $3: the privilege SET ROLE needs ('SET' from PostgreSQL 16, 'MEMBER' before).
SELECT w.position,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END AS grantee,
       pg_get_userbyid(a.grantor)::text AS grantor,
       a.privilege_type,
       a.is_grantable,
       pg_has_role(a.grantor, $3) AS may_act_as_grantor
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(acl, owner, position)
CROSS JOIN LATERAL aclexplode(coalesce(w.acl::aclitem[], acldefault('f', w.owner::regrole::oid)))
     WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, n)
WHERE w.owner IS NOT NULL
ORDER BY w.position, a.n
