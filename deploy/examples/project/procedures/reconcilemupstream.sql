-- Recomputes the cached upstream closure (m_upstream) of one material from
-- the transition arcs, and returns it, nearest first.
CREATE OR REPLACE FUNCTION public.reconcilemupstream(p_material_uid text)
RETURNS TABLE (upstream_uid text, depth integer)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
  IF NOT EXISTS (SELECT FROM public.material m WHERE m.uid = p_material_uid) THEN
    RAISE EXCEPTION 'unknown material %', p_material_uid
      USING ERRCODE = 'no_data_found',
            HINT = 'create the material before reconciling its lineage';
  END IF;

  DELETE FROM public.m_upstream u WHERE u.material_uid = p_material_uid;

  -- Walk the arcs upwards. The path guard stops on a cycle (which addarc
  -- refuses, but rows can be inserted by hand).
  INSERT INTO public.m_upstream (material_uid, upstream_uid, depth)
  WITH RECURSIVE walk (upstream_uid, depth, path) AS (
    SELECT t.parent_uid, 1, ARRAY[p_material_uid, t.parent_uid]
    FROM public.transition t
    WHERE t.child_uid = p_material_uid
    UNION ALL
    SELECT t.parent_uid, w.depth + 1, w.path || t.parent_uid
    FROM walk w
    JOIN public.transition t ON t.child_uid = w.upstream_uid
    WHERE t.parent_uid <> ALL (w.path)
  )
  SELECT p_material_uid, w.upstream_uid, min(w.depth)
  FROM walk w
  GROUP BY w.upstream_uid;

  RETURN QUERY
    SELECT u.upstream_uid, u.depth
    FROM public.m_upstream u
    WHERE u.material_uid = p_material_uid
    ORDER BY u.depth, u.upstream_uid;
END
$$;
