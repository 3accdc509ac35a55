-- The hot-spot overlay (map product `hotspot`, styles/hotspot.xml) and the command centre's
-- big screen (监督指挥大屏).
--
-- The overlay is drawn by Mapnik as the read-only map role: it shades each unit grid by the
-- cases filed in it over a period (the evaluation's `filed` facts, counted on the filing
-- day like the grid's case density), optionally of one kind and major class. The map role
-- reads only the columns that needs.
GRANT SELECT (subject_kind, subject, measure, day, case_id) ON case_fact TO citygrid_map;
CREATE INDEX case_fact_measure_day_idx ON case_fact (measure, subject_kind, day)
    INCLUDE (subject, case_id);

-- The account a command centre's wall display runs as: it reads the district's state and
-- the map pictures for it, and may do nothing else (auth.policy's `screen`).
INSERT INTO role (name, description) VALUES
    ('screen', '指挥大屏：只读展示全区态势（地图、案件计数、排名、最新事件）');
