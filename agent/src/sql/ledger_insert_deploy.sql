-- A deploy's rows (a deploy, a retire, an all-unchanged redeploy), one
-- statement: the new side of each changed routine is read from the catalog
-- here, in the statement that records it, instead of a snapshot sent to the
-- agent and back (issue 15 item 9: two megabytes of definitions on a
-- thousand routines, hashed and encoded in between while the database
-- waited). $1-$10 as in ledger_insert.sql; $11/$12 the plan and commit.
-- Per row, with the same precedence the agent used before:
--   kind 'retired'   : dropped by the job; the row names what it was;
--   kind 'untouched' : left as it was; the new side is the previous one;
--   kind 'recreated' : dropped and created again (new side from the catalog);
--   kind 'live'      : created or replaced; new side from the catalog, and
--                      'created' / 'unchanged' / 'replaced' judged here as
--                      the agent judged it (owner, ACL and comment count).
-- The catalog is looked up by oid where known (after the CREATEs), else by
-- signature. SHA-256 of each definition as the agent computes it: of the
-- text's UTF-8 bytes (what the agent receives with client_encoding UTF8).
-- Every function is named in pg_catalog, its literals typed: the session's
-- search path holds `public`, where a planted `convert_to(text, text)` would
-- otherwise win over pg_catalog's for an untyped 'UTF8' and run as the agent
-- (tests/tests/ledger_sides.rs).
WITH r AS (
    SELECT *
    -- ROWS FROM: a many-argument `unnest` is sugar for it, and only the
    -- unqualified name gets that sugar.
    FROM ROWS FROM (pg_catalog.unnest($13::text[]), pg_catalog.unnest($14::oid[]),
                    pg_catalog.unnest($15::text[]), pg_catalog.unnest($16::text[]),
                    pg_catalog.unnest($17::text[]), pg_catalog.unnest($18::text[]),
                    pg_catalog.unnest($19::text[]), pg_catalog.unnest($20::text[]),
                    pg_catalog.unnest($21::text[])) WITH ORDINALITY
         AS r(kind, known_oid, signature, previous_identity, previous_definition,
              previous_owner, previous_acl, previous_comment, source_sha256, position)
), sides AS (
    SELECT r.position, r.kind, r.source_sha256,
           r.previous_definition, r.previous_owner, r.previous_acl, r.previous_comment,
           CASE WHEN r.kind IN ('live', 'recreated') THEN p.oid::regprocedure::text
                ELSE r.previous_identity END                                   AS identity,
           CASE WHEN r.kind IN ('live', 'recreated') THEN pg_catalog.pg_get_functiondef(p.oid)
                WHEN r.kind = 'untouched' THEN r.previous_definition END      AS new_definition,
           CASE WHEN r.kind IN ('live', 'recreated') THEN pg_catalog.pg_get_userbyid(p.proowner)::text
                WHEN r.kind = 'untouched' THEN r.previous_owner END           AS new_owner,
           CASE WHEN r.kind IN ('live', 'recreated') THEN p.proacl::text
                WHEN r.kind = 'untouched' THEN r.previous_acl END             AS new_acl,
           CASE WHEN r.kind IN ('live', 'recreated') THEN d.description
                WHEN r.kind = 'untouched' THEN r.previous_comment END         AS new_comment
    FROM r
    LEFT JOIN pg_catalog.pg_proc p
           ON r.kind IN ('live', 'recreated')
          AND p.oid = coalesce(r.known_oid, pg_catalog.to_regprocedure(r.signature)::oid)
    LEFT JOIN pg_catalog.pg_description d
           ON d.objoid = p.oid AND d.classoid = 'pg_catalog.pg_proc'::regclass AND d.objsubid = 0
)
INSERT INTO {schema}.ledger (
    job_id, attempt, rollout_id, action, actor, trace_id, backup_path, backup_sha256,
    audit_seq, audit_hash, plan_id, commit_sha, identity, change,
    previous_definition, previous_owner, previous_acl, previous_comment, previous_sha256,
    new_definition, new_owner, new_acl, new_comment, new_sha256, source_sha256)
SELECT $1, $2, $3, $4, $5, $6,
       CASE WHEN s.kind <> 'untouched' THEN $7 END, CASE WHEN s.kind <> 'untouched' THEN $8 END,
       $9, $10, $11, $12, s.identity,
       CASE WHEN s.kind = 'retired' THEN 'retired'
            WHEN s.kind = 'untouched' THEN 'unchanged'
            WHEN s.kind = 'recreated' THEN 'recreated'
            WHEN s.previous_definition IS NULL THEN 'created'
            WHEN s.previous_definition = s.new_definition
             AND s.previous_owner IS NOT DISTINCT FROM s.new_owner
             AND s.previous_acl IS NOT DISTINCT FROM s.new_acl
             AND s.previous_comment IS NOT DISTINCT FROM s.new_comment THEN 'unchanged'
            ELSE 'replaced' END,
       s.previous_definition, s.previous_owner, s.previous_acl, s.previous_comment,
       pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(s.previous_definition, 'UTF8'::pg_catalog.name)), 'hex'::pg_catalog.text),
       s.new_definition, s.new_owner, s.new_acl, s.new_comment,
       pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(s.new_definition, 'UTF8'::pg_catalog.name)), 'hex'::pg_catalog.text),
       s.source_sha256
FROM sides s
ORDER BY s.position
RETURNING id, change, coalesce(new_sha256, ''), coalesce(previous_sha256, '')
