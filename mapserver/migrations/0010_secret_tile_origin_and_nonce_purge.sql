-- The install's tile matrix, with its secret origin, and the purge of spent nonces.
--
-- * tile_matrix: one row, drawn at random when this migration runs: tiles/origin.py fills
--   in the CRS's area of use and matrix size (public), and PostgreSQL draws the two offsets
--   west and north of it from gen_random_uuid's strong random bits, so the origin appears in
--   no statement text. Tile indices count from this
--   origin, so it never leaves the database: the serving roles may read it, nobody changes it.
-- * Nonces of signed actions are deleted once expired (action_nonce_purge, called by the app
--   when it issues a nonce). A spent nonce stays single-use after its row is gone: an unknown
--   nonce is refused, and signed_action.nonce is UNIQUE. The foreign key from signed_action
--   would pin every spent nonce for ever, so it goes.

CREATE TABLE tile_matrix (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    origin_x  double precision NOT NULL,
    origin_y  double precision NOT NULL,
    top_tiles integer NOT NULL CHECK (top_tiles > 0),
    drawn_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tile_matrix (origin_x, origin_y, top_tiles)
SELECT {{TILE_AREA_MINX}} - {{TILE_OFFSET_M}}, {{TILE_AREA_MAXY}} + {{TILE_OFFSET_M}},
       {{TILE_TOP_TILES}};

CREATE FUNCTION tile_matrix_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tile_matrix is fixed when the schema is created';
END
$$;
CREATE TRIGGER tile_matrix_fixed BEFORE UPDATE OR DELETE ON tile_matrix
    FOR EACH ROW EXECUTE FUNCTION tile_matrix_fixed();
CREATE TRIGGER tile_matrix_no_truncate BEFORE TRUNCATE ON tile_matrix
    FOR EACH STATEMENT EXECUTE FUNCTION tile_matrix_fixed();

REVOKE ALL ON tile_matrix FROM PUBLIC, citygrid_app;
GRANT SELECT ON tile_matrix TO citygrid_app;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_map') THEN
        GRANT SELECT ON tile_matrix TO citygrid_map;
    END IF;
END
$$;

-- ---------------------------------------------------------------- spent nonces

ALTER TABLE signed_action DROP CONSTRAINT IF EXISTS signed_action_nonce_fkey;

-- Runs as the owner: the app role may not delete nonces, only have the expired ones purged,
-- oldest first and at most 1000 at a time.
CREATE FUNCTION action_nonce_purge(older_than interval, max_rows integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH gone AS (
        DELETE FROM action_nonce WHERE nonce IN (
            SELECT nonce FROM action_nonce
            WHERE expires_at < now() - greatest(older_than, interval '0')
            ORDER BY expires_at
            LIMIT least(greatest(max_rows, 0), 1000)
            FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
REVOKE ALL ON FUNCTION action_nonce_purge(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION action_nonce_purge(interval, integer) TO citygrid_app;
