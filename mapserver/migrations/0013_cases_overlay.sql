-- The cases overlay (map product `cases`, styles/cases.xml): which cases show on the map, in
-- which state group, and whether they are overdue. One definition for the renderer (as the
-- read-only map role) and for the viewer's click on a case (mapserver/cases/on_map.py).
-- Rejected and cancelled cases are not shown, closed ones for 30 days after their closing.

GRANT SELECT (closed_at) ON city_case TO citygrid_map;

CREATE FUNCTION case_map_group(state text, closed_at timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN state IN ('reported', 'accepted', 'filed', 'suspended') THEN 'open'
        WHEN state IN ('dispatched', 'handling') THEN 'handling'
        WHEN state IN ('handled', 'feedback', 'checking') THEN 'checking'
        WHEN state = 'closed' AND closed_at > now() - interval '30 days' THEN 'closed'
    END
$$;

-- Past its stage deadline and not finished (a suspended case has no deadline running).
CREATE FUNCTION case_overdue(state text, stage_deadline timestamptz) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT state NOT IN ('closed', 'rejected', 'cancelled')
        AND stage_deadline IS NOT NULL AND stage_deadline < now()
$$;
