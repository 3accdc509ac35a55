-- The tile origin is drawn from the district's extent, when the district first arrives.
--
-- Migration 0010 drew the origin west and north of the CRS's whole area of use; a district
-- at the edge of that area, or beyond it, could fall outside the matrix. From now on the
-- origin is drawn when the first district row is stored (by `import --as district`, the demo
-- or by hand): west and north of the district's extent by a margin plus a random secret
-- offset drawn inside PostgreSQL (tiles/origin.py: MARGIN_M, SPREAD_M, `draw`), with a
-- matrix sized from the district's extent rounded up to QUANTUM_M (so its size tells
-- nothing finer) plus both margins and the spread. The row is then fixed as before.
--
-- Installs that already have a district keep the origin they have (basis 'crs_area'):
-- cached tiles and clients' tile indices stay valid. A matrix drawn before any district
-- existed has addressed nothing yet; it gives way to one drawn from the district.
-- `citygrid tiles redraw-origin` is the one, explicit way to draw again.

ALTER TABLE tile_matrix ADD COLUMN basis text NOT NULL DEFAULT 'crs_area'
    CHECK (basis IN ('crs_area', 'district'));

ALTER TABLE tile_matrix DISABLE TRIGGER tile_matrix_fixed;
DELETE FROM tile_matrix WHERE NOT EXISTS (SELECT 1 FROM district);
ALTER TABLE tile_matrix ENABLE TRIGGER tile_matrix_fixed;

-- Draws the matrix from the district when there is none (a no-op otherwise).
CREATE FUNCTION tile_matrix_draw() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    e box2d;
    reach double precision;
BEGIN
    IF EXISTS (SELECT 1 FROM tile_matrix) THEN
        RETURN false;
    END IF;
    SELECT ST_Extent(geom) INTO e FROM district;
    IF e IS NULL THEN
        RETURN false;
    END IF;
    reach := ceil(greatest(ST_XMax(e) - ST_XMin(e), ST_YMax(e) - ST_YMin(e))
                  / {{TILE_QUANTUM_M}}) * {{TILE_QUANTUM_M}}
             + 2 * {{TILE_MARGIN_M}} + {{TILE_SPREAD_M}};
    INSERT INTO tile_matrix (origin_x, origin_y, top_tiles, basis)
    VALUES (ST_XMin(e) - {{TILE_OFFSET_M}}, ST_YMax(e) + {{TILE_OFFSET_M}},
            ceil(reach / {{TILE_LEVEL0_SPAN}})::integer + 1, 'district')
    ON CONFLICT (one) DO NOTHING;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION tile_matrix_draw() FROM PUBLIC;

CREATE FUNCTION tile_matrix_on_district() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM tile_matrix_draw();
    RETURN NULL;
END
$$;
CREATE TRIGGER tile_matrix_on_district AFTER INSERT OR UPDATE ON district
    FOR EACH STATEMENT EXECUTE FUNCTION tile_matrix_on_district();
