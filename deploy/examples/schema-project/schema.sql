-- What the target holds before the first deploy (a migration's job, not
-- pgrollout's): the schemas and the type the library uses.
CREATE SCHEMA IF NOT EXISTS tap;
CREATE SCHEMA IF NOT EXISTS tap_types;
CREATE SCHEMA IF NOT EXISTS tap_util;
CREATE TYPE tap_types.version_info AS (major integer, full_text text);
