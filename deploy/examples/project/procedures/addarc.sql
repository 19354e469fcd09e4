-- Adds the arc parent -> child and brings the upstream cache of the child
-- and of everything downstream of it up to date. Returns how many
-- materials were reconciled (0 when the arc already existed).
CREATE OR REPLACE FUNCTION public.addarc(p_parent_uid text, p_child_uid text, p_created_at timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  v_material_uid text;
  v_reconciled integer := 0;
BEGIN
  IF p_parent_uid = p_child_uid THEN
    RAISE EXCEPTION 'material % cannot be its own parent', p_parent_uid
      USING ERRCODE = 'check_violation';
  END IF;
  IF NOT EXISTS (SELECT FROM public.material m WHERE m.uid = p_parent_uid) THEN
    RAISE EXCEPTION 'unknown parent material %', p_parent_uid USING ERRCODE = 'no_data_found';
  END IF;
  IF NOT EXISTS (SELECT FROM public.material m WHERE m.uid = p_child_uid) THEN
    RAISE EXCEPTION 'unknown child material %', p_child_uid USING ERRCODE = 'no_data_found';
  END IF;

  -- One lineage change at a time, so two concurrent arcs cannot close a cycle.
  LOCK TABLE public.transition IN SHARE ROW EXCLUSIVE MODE;

  -- The arc would close a cycle if the child is already upstream of the
  -- parent. Checked on the arcs themselves, not on the cache.
  IF EXISTS (
    WITH RECURSIVE walk (material_uid, path) AS (
      SELECT t.parent_uid, ARRAY[t.parent_uid]
      FROM public.transition t
      WHERE t.child_uid = p_parent_uid
      UNION ALL
      SELECT t.parent_uid, w.path || t.parent_uid
      FROM walk w
      JOIN public.transition t ON t.child_uid = w.material_uid
      WHERE t.parent_uid <> ALL (w.path)
    )
    SELECT FROM walk WHERE material_uid = p_child_uid
  ) THEN
    RAISE EXCEPTION 'arc % -> % would create a cycle', p_parent_uid, p_child_uid
      USING ERRCODE = 'check_violation',
            DETAIL = format('%s is already upstream of %s', p_child_uid, p_parent_uid);
  END IF;

  INSERT INTO public.transition (parent_uid, child_uid, created_at)
  VALUES (p_parent_uid, p_child_uid, p_created_at)
  ON CONFLICT (parent_uid, child_uid) DO NOTHING;
  IF NOT FOUND THEN
    RETURN 0;
  END IF;

  FOR v_material_uid IN
    SELECT p_child_uid
    UNION
    SELECT u.material_uid FROM public.m_upstream u WHERE u.upstream_uid = p_child_uid
    ORDER BY 1
  LOOP
    PERFORM 1 FROM public.reconcilemupstream(v_material_uid);
    v_reconciled := v_reconciled + 1;
  END LOOP;
  RETURN v_reconciled;
END
$$;

-- The same, created now.
CREATE OR REPLACE FUNCTION public.addarc(p_parent_uid text, p_child_uid text)
RETURNS integer
LANGUAGE plpgsql
AS $$
BEGIN
  RETURN public.addarc(p_parent_uid, p_child_uid, now());
END
$$;
