-- A TAP line: "ok - description" or "not ok - description".
CREATE OR REPLACE FUNCTION ok(boolean, text) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT CASE WHEN $1 THEN 'ok - ' ELSE 'not ok - ' END || $2 $$;
