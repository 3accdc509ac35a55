-- Two zones: a gateway outside the secure zone keeps its cases without coordinates. A case's
-- place is also its pixel in the finest level's pictures, counted from the tile grid's
-- secret origin (what clients already see of it); its point (`geom`) stays empty there.
-- In one process both are kept. The unit grid, community and street a case lies in stay
-- codes (the gateway registers them without shapes: mapserver/cases/areas.py).

ALTER TABLE city_case ALTER COLUMN geom DROP NOT NULL;
ALTER TABLE city_case ADD COLUMN pixel_x bigint, ADD COLUMN pixel_y bigint;
ALTER TABLE city_case ADD CONSTRAINT city_case_placed
    CHECK (geom IS NOT NULL OR (pixel_x IS NOT NULL AND pixel_y IS NOT NULL));
CREATE INDEX city_case_pixel_idx ON city_case (pixel_x, pixel_y);

-- A gateway's own database holds no map: the areas its cases name are registered there as
-- codes and names without shapes (an empty geometry), from the renderer's answer. Only on a
-- database whose district has no shape at all (a gateway's), never over map data.
CREATE FUNCTION register_case_area(
    district_code text, district_name text, street_code text, street_name text,
    community_code text, community_name text, grid_code text, area_m2 double precision
) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    INSERT INTO district (code, name, geom, origin)
        SELECT $1, $2, ST_SetSRID('MULTIPOLYGON EMPTY'::geometry, {{SRID}}), 'renderer'
        WHERE NOT EXISTS (SELECT 1 FROM district WHERE NOT ST_IsEmpty(geom))
        ON CONFLICT (code) DO NOTHING;
    INSERT INTO street (code, district_code, name, geom, origin)
        SELECT $3, $1, $4, ST_SetSRID('MULTIPOLYGON EMPTY'::geometry, {{SRID}}), 'renderer'
        WHERE NOT EXISTS (SELECT 1 FROM district WHERE NOT ST_IsEmpty(geom))
        ON CONFLICT (code) DO NOTHING;
    INSERT INTO community (code, street_code, name, geom, origin)
        SELECT $5, $3, $6, ST_SetSRID('MULTIPOLYGON EMPTY'::geometry, {{SRID}}), 'renderer'
        WHERE NOT EXISTS (SELECT 1 FROM district WHERE NOT ST_IsEmpty(geom))
        ON CONFLICT (code) DO NOTHING;
    INSERT INTO unit_grid (code, community_code, area_m2, geom, origin)
        SELECT $7, $5, $8, ST_SetSRID('MULTIPOLYGON EMPTY'::geometry, {{SRID}}), 'renderer'
        WHERE NOT EXISTS (SELECT 1 FROM district WHERE NOT ST_IsEmpty(geom))
        ON CONFLICT (code) DO NOTHING;
$$;
REVOKE ALL ON FUNCTION register_case_area(text, text, text, text, text, text, text,
    double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION register_case_area(text, text, text, text, text, text, text,
    double precision) TO citygrid_app;

-- The renderer geocodes addresses for the gateway (a case placed by its address), as the
-- read-only map role.
GRANT SELECT ON address TO citygrid_map;
