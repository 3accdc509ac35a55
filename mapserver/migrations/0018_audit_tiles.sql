-- The audit tree's interior nodes as C2SP tlog-tiles (audit/tiles.py): every full tile of
-- 256 hashes, with its Merkle root (the tile's hash one level up), written in the same
-- transaction as the entries that complete it. Partial tiles at the right edge are read from
-- the newest leaf hashes and tile roots, so nothing here is ever rewritten. Proofs read a
-- few tiles per level instead of every leaf hash. Append-only like the log itself; `citygrid
-- audit verify` recomputes every tile.

CREATE TABLE audit_tile (
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx    bigint NOT NULL CHECK (idx >= 0),
    hashes bytea NOT NULL CHECK (length(hashes) = 8192),
    root   bytea NOT NULL CHECK (length(root) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TRIGGER audit_tile_append_only BEFORE UPDATE OR DELETE ON audit_tile
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_tile_no_truncate BEFORE TRUNCATE ON audit_tile
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The default privileges of migration 0004 would give the serving role UPDATE and DELETE.
REVOKE ALL ON audit_tile FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON audit_tile TO citygrid_app;

-- Tiles of a log written before this migration: RFC 9162 node hashes of 256 hashes at a
-- time, level by level. A leaf missing from the log leaves a tile short, which the length
-- check refuses, so the migration fails rather than build tiles over a gap.
CREATE FUNCTION pg_temp.audit_tile_root(hashes bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    layer bytea := hashes;
    above bytea;
BEGIN
    WHILE length(layer) > 32 LOOP
        above := ''::bytea;
        FOR i IN 0 .. length(layer) / 64 - 1 LOOP
            above := above || sha256('\x01'::bytea || substring(layer FROM i * 64 + 1 FOR 64));
        END LOOP;
        layer := above;
    END LOOP;
    RETURN layer;
END
$$;

DO $$
DECLARE
    lvl smallint := 0;
    hashes_at_level bigint;
BEGIN
    SELECT size INTO hashes_at_level FROM audit_tree;
    INSERT INTO audit_tile (level, idx, hashes, root)
    SELECT 0, t, h, pg_temp.audit_tile_root(h)
    FROM (
        SELECT leaf_index / 256 AS t, string_agg(leaf_hash, ''::bytea ORDER BY leaf_index) AS h
        FROM audit_entry
        WHERE leaf_index < hashes_at_level / 256 * 256
        GROUP BY leaf_index / 256
    ) tiles;
    hashes_at_level := hashes_at_level / 256;
    WHILE hashes_at_level >= 256 LOOP
        INSERT INTO audit_tile (level, idx, hashes, root)
        SELECT lvl + 1, t, h, pg_temp.audit_tile_root(h)
        FROM (
            SELECT idx / 256 AS t, string_agg(root, ''::bytea ORDER BY idx) AS h
            FROM audit_tile
            WHERE level = lvl AND idx < hashes_at_level / 256 * 256
            GROUP BY idx / 256
        ) tiles;
        lvl := lvl + 1;
        hashes_at_level := hashes_at_level / 256;
    END LOOP;
END
$$;
