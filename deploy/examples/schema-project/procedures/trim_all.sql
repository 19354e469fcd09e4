-- A helper that belongs in another schema: its sidecar says which.
CREATE OR REPLACE FUNCTION trim_all(VARIADIC parts text[]) RETURNS text[] LANGUAGE sql IMMUTABLE
AS $$ SELECT array_agg(btrim(p)) FROM unnest(parts) AS p $$;
