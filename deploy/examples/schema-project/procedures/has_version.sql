-- Calls its siblings unqualified: PostgreSQL resolves them while creating
-- it, with the project's search path.
CREATE OR REPLACE FUNCTION has_version() RETURNS text LANGUAGE sql STABLE
AS $$ SELECT ok(pg_version() IS NOT NULL, 'server version ' || (pg_version_info()).full_text) $$;
