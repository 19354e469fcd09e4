-- Removes the arc parent -> child and brings the upstream cache of the child
-- and of everything downstream of it up to date.
CREATE OR REPLACE PROCEDURE public.removearc(p_parent_uid text, p_child_uid text)
LANGUAGE plpgsql
AS $$
DECLARE
  v_material_uid text;
BEGIN
  LOCK TABLE public.transition IN SHARE ROW EXCLUSIVE MODE;

  DELETE FROM public.transition t
  WHERE t.parent_uid = p_parent_uid AND t.child_uid = p_child_uid;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no arc % -> %', p_parent_uid, p_child_uid
      USING ERRCODE = 'no_data_found',
            HINT = 'list the arcs of a material with SELECT * FROM transition WHERE child_uid = ...';
  END IF;

  -- Removing an arc above the child does not change what is downstream of it.
  FOR v_material_uid IN
    SELECT p_child_uid
    UNION
    SELECT u.material_uid FROM public.m_upstream u WHERE u.upstream_uid = p_child_uid
    ORDER BY 1
  LOOP
    PERFORM 1 FROM public.reconcilemupstream(v_material_uid);
  END LOOP;
END
$$;
