-- The server's version, as text.
CREATE OR REPLACE FUNCTION pg_version() RETURNS text LANGUAGE sql STABLE
AS $$ SELECT current_setting('server_version') $$;

-- The same, split: a type from another schema as return and parameter type.
CREATE OR REPLACE FUNCTION pg_version_info() RETURNS version_info LANGUAGE sql STABLE
AS $$ SELECT ROW(split_part(pg_version(), '.', 1)::integer, pg_version())::version_info $$;
