-- What depends on each routine ($1, regprocedure texts) in a way that blocks
-- DROP ROUTINE ... RESTRICT: views (through their rewrite rule), functions with
-- BEGIN ATOMIC bodies, triggers, column defaults, ... - every normal
-- dependency, described as PostgreSQL names it, a view by its name.
SELECT r.identity,
       CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass
            THEN (SELECT 'view ' || w.ev_class::regclass::text FROM pg_rewrite w WHERE w.oid = d.objid)
            ELSE pg_describe_object(d.classid, d.objid, d.objsubid)
       END AS dependant
FROM unnest($1::text[]) AS r(identity)
JOIN pg_depend d
  ON d.refclassid = 'pg_catalog.pg_proc'::regclass
 AND d.refobjid = to_regprocedure(r.identity)
 AND d.deptype = 'n'
ORDER BY 1, 2
