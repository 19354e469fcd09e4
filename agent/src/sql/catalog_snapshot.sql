-- Everything needed to restore each routine exactly, for all routines of a
-- job in one round trip. $1 is the list of signatures `to_regprocedure` reads;
-- a routine that does not exist yet comes back with existed = false. $2 holds
-- the oids already known (shorter or empty: unnest pads it with NULLs); a
-- known oid spares the signature's parse.
SELECT p.oid IS NOT NULL                    AS existed,
       p.oid::regprocedure::text            AS identity,
       pg_get_functiondef(p.oid)            AS definition,
       pg_get_userbyid(p.proowner)::text    AS owner,
       p.proacl::text                       AS acl,
       d.description                        AS comment,
       n.nspname::text                      AS schema
FROM unnest($1::text[], $2::oid[]) WITH ORDINALITY AS wanted(signature, known_oid, position)
LEFT JOIN pg_proc p ON p.oid = coalesce(wanted.known_oid, to_regprocedure(wanted.signature)::oid)
LEFT JOIN pg_namespace n ON n.oid = p.pronamespace
-- What obj_description(p.oid, 'pg_proc') reads, joined: that function runs
-- a SQL query per routine, a third of this query's time at a thousand.
LEFT JOIN pg_description d
       ON d.objoid = p.oid AND d.classoid = 'pg_catalog.pg_proc'::regclass AND d.objsubid = 0
ORDER BY wanted.position
