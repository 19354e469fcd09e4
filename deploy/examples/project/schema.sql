-- Example schema for the pgrollout sample project: the lineage of lab
-- materials. `transition` holds the arcs parent -> child between materials;
-- `m_upstream` caches, for every material, all of its transitive upstream
-- materials with their distance, and is kept current by the routines in
-- procedures/.
--
-- The demo and the tests apply this file to each database before deploying.
-- It is re-runnable: every object is created only when missing.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'perseus_app') THEN
    CREATE ROLE perseus_app NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'perseus_report') THEN
    CREATE ROLE perseus_report NOLOGIN;
  END IF;
END
$$;

CREATE TABLE IF NOT EXISTS public.material (
  uid        text PRIMARY KEY,
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.transition (
  parent_uid text NOT NULL REFERENCES public.material (uid),
  child_uid  text NOT NULL REFERENCES public.material (uid),
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT transition_pkey PRIMARY KEY (parent_uid, child_uid),
  CONSTRAINT transition_no_self_arc CHECK (parent_uid <> child_uid)
);
CREATE INDEX IF NOT EXISTS transition_child_uid_idx ON public.transition (child_uid);

CREATE TABLE IF NOT EXISTS public.m_upstream (
  material_uid text NOT NULL REFERENCES public.material (uid) ON DELETE CASCADE,
  upstream_uid text NOT NULL REFERENCES public.material (uid) ON DELETE CASCADE,
  depth        integer NOT NULL CHECK (depth >= 1),
  CONSTRAINT m_upstream_pkey PRIMARY KEY (material_uid, upstream_uid)
);
CREATE INDEX IF NOT EXISTS m_upstream_upstream_uid_idx ON public.m_upstream (upstream_uid);

GRANT SELECT, INSERT, UPDATE, DELETE ON public.material, public.transition, public.m_upstream
  TO perseus_app;
GRANT SELECT ON public.material, public.transition, public.m_upstream TO perseus_report;

-- Seed: M-0001 -> M-0002 -> M-0003 -> M-0004 <- M-0005
INSERT INTO public.material (uid, name, created_at) VALUES
  ('M-0001', 'HEK293 cell line',         '2024-01-10 09:00:00+00'),
  ('M-0002', 'HEK293 passage 12',        '2024-01-24 09:00:00+00'),
  ('M-0003', 'clarified lysate',         '2024-02-02 14:30:00+00'),
  ('M-0004', 'purified protein, lot 7',  '2024-02-05 16:00:00+00'),
  ('M-0005', 'elution buffer, batch 3',  '2024-02-01 08:15:00+00')
ON CONFLICT (uid) DO NOTHING;

INSERT INTO public.transition (parent_uid, child_uid, created_at) VALUES
  ('M-0001', 'M-0002', '2024-01-24 09:00:00+00'),
  ('M-0002', 'M-0003', '2024-02-02 14:30:00+00'),
  ('M-0003', 'M-0004', '2024-02-05 16:00:00+00'),
  ('M-0005', 'M-0004', '2024-02-05 16:00:00+00')
ON CONFLICT (parent_uid, child_uid) DO NOTHING;

-- The cache for the seed, at the shortest distance to each upstream material.
INSERT INTO public.m_upstream (material_uid, upstream_uid, depth)
WITH RECURSIVE upstream (material_uid, upstream_uid, depth) AS (
  SELECT child_uid, parent_uid, 1 FROM public.transition
  UNION
  SELECT u.material_uid, t.parent_uid, u.depth + 1
  FROM upstream u
  JOIN public.transition t ON t.child_uid = u.upstream_uid
  WHERE u.depth < 1000
)
SELECT material_uid, upstream_uid, min(depth) FROM upstream GROUP BY material_uid, upstream_uid
ON CONFLICT (material_uid, upstream_uid) DO NOTHING;
