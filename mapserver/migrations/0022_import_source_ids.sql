-- Re-import keyed by the file's own feature ids (`citygrid import --id-field FIELD`):
-- each map row remembers the id its source gave it; a second import of the same ids
-- replaces those rows instead of adding them again. One row per (scale, id) and table.

ALTER TABLE building ADD COLUMN source_id text;
ALTER TABLE road_line ADD COLUMN source_id text;
ALTER TABLE road_surface ADD COLUMN source_id text;
ALTER TABLE water ADD COLUMN source_id text;
ALTER TABLE green ADD COLUMN source_id text;
ALTER TABLE annotation ADD COLUMN source_id text;
ALTER TABLE address ADD COLUMN source_id text;

CREATE UNIQUE INDEX building_source_id_idx ON building (scale, source_id)
    WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX road_line_source_id_idx ON road_line (scale, source_id)
    WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX road_surface_source_id_idx ON road_surface (scale, source_id)
    WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX water_source_id_idx ON water (scale, source_id)
    WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX green_source_id_idx ON green (scale, source_id)
    WHERE source_id IS NOT NULL;
CREATE UNIQUE INDEX annotation_source_id_idx ON annotation (scale, source_id)
    WHERE source_id IS NOT NULL;
-- an address feature may give a house number and a landmark: one row of each kind
CREATE UNIQUE INDEX address_source_id_idx ON address (kind, source_id)
    WHERE source_id IS NOT NULL;
