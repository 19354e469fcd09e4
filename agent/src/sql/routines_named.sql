-- Every routine a selector names: $1 schema ('' for any), $2 name, $3 input
-- argument types as oidvectortypes() writes them (NULL for every overload),
-- $4 the ledger's schema, which is never searched. System schemas neither.
SELECT p.oid::regprocedure::text AS identity,
       p.oid,
       n.nspname::text           AS schema,
       p.proname::text           AS name
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = $2
  AND ($1 = '' OR n.nspname = $1)
  AND ($3::text IS NULL OR oidvectortypes(p.proargtypes) = $3)
  AND p.prokind IN ('f', 'p')
  AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema', $4])
  AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 1
