-- The component editor role: how the renderer service of the secure zone (two zones) applies
-- a bureau's component changes to the map database. The map stays inside, so a change the
-- gateway accepted is applied there; the renderer's map role citygrid_map stays read-only,
-- and the serving role citygrid_app, which the gateway uses in its own zone, is never
-- admitted to the map database. citygrid_component reads what the map role reads (it is a
-- member of it), edits components as the serving role may in one process (0027: never a
-- code, never a delete), keeps import files, and keeps its own copy of each signed action it
-- applied, so a component's history names an action that can be verified in its own zone.
--
-- An import file is kept where the map is, by the account that sent it: in two zones an
-- account of the gateway's zone, which the map database does not hold (the gateway checked
-- who it is). So component_import.account no longer refers to the account table.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_component') THEN
        BEGIN
            CREATE ROLE citygrid_component LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by a migration of another database of this cluster
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO citygrid_component', current_database());
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_map') THEN
        GRANT citygrid_map TO citygrid_component;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO citygrid_component;
GRANT SELECT ON component, component_class, unit_grid, community, street, tile_matrix
    TO citygrid_component;
GRANT INSERT ON component TO citygrid_component;
GRANT UPDATE (name, state, in_use, responsible_dept, owner_dept, maintainer_dept, grid_code,
              data_source, changed_on, geom, origin, version, changed_at, retired_at)
    ON component TO citygrid_component;
GRANT SELECT, INSERT, UPDATE ON component_counter TO citygrid_component;
GRANT SELECT, INSERT ON component_import TO citygrid_component;
GRANT UPDATE (applied_at, signed_action) ON component_import TO citygrid_component;
GRANT SELECT ON component_history TO citygrid_component;
GRANT SELECT, INSERT ON signed_action TO citygrid_component;

ALTER TABLE component_import DROP CONSTRAINT component_import_account_fkey;
