-- Drift (issue 20): every routine the ledger expects, with its live state,
-- and every other routine of the managed schemas: one round trip.
-- {schema} is the quoted ledger schema; {new_identity} is `l.new_identity`,
-- or NULL for a ledger from before disable recorded it. $1 is the ledger
-- schema's name, whose own objects are never "unmanaged".
--
-- What the ledger expects is the `new` side of the latest row of each
-- identity, filed under the identity it left the routine at (a disable's
-- rename moves it). A NULL new_definition means the ledger expects no
-- routine there (retired, or a rollback of its creation).
--
-- Live state is the catalog's own rendering (pg_get_functiondef, which
-- includes SECURITY DEFINER and every proconfig SET), so a dump/restore or
-- pg_upgrade, which re-render from the catalog, compare equal.
WITH latest AS (
    SELECT DISTINCT ON (l.identity)
           l.id, coalesce({new_identity}, l.identity) AS expected_identity,
           l.new_definition, l.new_owner, l.new_acl, l.new_comment
    FROM {schema}.ledger l
    ORDER BY l.identity, l.id DESC
), expected AS (
    SELECT DISTINCT ON (expected_identity) *,
           to_regprocedure(expected_identity)::oid AS live_oid,
           parse_ident(expected_identity, false) AS parts
    FROM latest
    ORDER BY expected_identity, id DESC
), managed AS (
    SELECT DISTINCT p.pronamespace AS nsp
    FROM expected e JOIN pg_proc p ON p.oid = e.live_oid
    WHERE e.new_definition IS NOT NULL
), unmanaged AS (
    SELECT p.oid
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.pronamespace IN (SELECT nsp FROM managed)
      AND n.nspname <> $1
      -- Aggregates and window functions have no pg_get_functiondef.
      AND p.prokind IN ('f', 'p')
      AND NOT EXISTS (SELECT FROM expected e WHERE e.live_oid = p.oid)
      -- An extension's members are the extension's business.
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'e')
), compared AS (
    SELECT true AS ledgered, e.expected_identity AS identity,
           CASE WHEN cardinality(e.parts) > 1 THEN e.parts[1] ELSE 'public' END AS schema,
           e.parts[cardinality(e.parts)] AS name,
           e.new_definition IS NOT NULL AS expected_exists,
           e.new_definition, e.new_owner,
           -- NULL is the default privileges: written out, so a first hand
           -- GRANT shows as the one item it adds.
           coalesce(e.new_acl, acldefault('f', (SELECT r.oid FROM pg_roles r
                                                WHERE r.rolname = e.new_owner))::text) AS new_acl,
           e.new_comment, e.live_oid
    FROM expected e
    UNION ALL
    SELECT false, p.oid::regprocedure::text, n.nspname::text, p.proname::text,
           false, NULL, NULL, NULL, NULL, p.oid
    FROM unmanaged u JOIN pg_proc p ON p.oid = u.oid JOIN pg_namespace n ON n.oid = p.pronamespace
)
SELECT c.ledgered, c.identity, c.schema, c.name, c.expected_exists,
       c.new_definition, c.new_owner, c.new_acl, c.new_comment,
       p.oid IS NOT NULL                 AS live_exists,
       CASE WHEN p.oid IS NOT NULL AND p.prokind IN ('f', 'p')
            THEN pg_get_functiondef(p.oid) END AS live_definition,
       pg_get_userbyid(p.proowner)::text AS live_owner,
       coalesce(p.proacl, acldefault('f', p.proowner))::text AS live_acl,
       d.description                     AS live_comment,
       (SELECT array_agg(DISTINCT m.nsp::regnamespace::text ORDER BY m.nsp::regnamespace::text)
        FROM managed m)                  AS managed_schemas
FROM compared c
LEFT JOIN pg_proc p ON p.oid = c.live_oid
LEFT JOIN pg_description d
       ON d.objoid = p.oid AND d.classoid = 'pg_catalog.pg_proc'::regclass AND d.objsubid = 0
ORDER BY c.ledgered DESC, c.identity
