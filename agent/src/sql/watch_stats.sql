-- Every routine of the watched names, with its call statistics when
-- pg_stat_user_functions has a row for it. It has none for a routine not
-- called (or not counted: track_functions) since the statistics were last
-- reset, and none for a call that raised an error: PostgreSQL counts a call
-- when it returns.
SELECT p.oid AS oid,
       format('%s.%s(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes)) AS identity,
       l.lanname::text AS language,
       s.calls AS calls,
       s.total_time AS total_time,
       s.self_time AS self_time
FROM unnest($1::text[], $2::text[]) AS wanted(schema_name, routine_name)
JOIN pg_namespace n ON n.nspname = wanted.schema_name
JOIN pg_proc p ON p.pronamespace = n.oid AND p.proname = wanted.routine_name
JOIN pg_language l ON l.oid = p.prolang
LEFT JOIN pg_stat_user_functions s ON s.funcid = p.oid
ORDER BY identity
