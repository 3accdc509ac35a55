-- Two zones: a component case links to its component (city_case_component_fk), and a
-- gateway's own database holds no map. The component a case names is registered there by
-- code, class, name and unit grid without a point (an empty one), from the renderer's answer;
-- only on a database whose district has no shape at all (a gateway's), never over map data.
CREATE FUNCTION register_case_component(
    code text, name text, state text, grid_code text, responsible_dept text,
    owner_dept text, maintainer_dept text, data_source text, changed_on date
) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    INSERT INTO component (code, name, state, grid_code, responsible_dept, owner_dept,
                           maintainer_dept, data_source, changed_on, geom, origin)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9,
               ST_SetSRID('POINT EMPTY'::geometry, {{SRID}}), 'renderer'
        WHERE NOT EXISTS (SELECT 1 FROM district WHERE NOT ST_IsEmpty(geom))
        ON CONFLICT (code) DO NOTHING;
$$;
REVOKE ALL ON FUNCTION register_case_component(text, text, text, text, text, text, text, text,
    date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION register_case_component(text, text, text, text, text, text, text,
    text, date) TO citygrid_app;
