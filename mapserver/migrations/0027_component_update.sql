-- Component online update (部件在线更新): bureaus edit the components of their departments.
--
-- * component.version counts the changes of a component: an edit names the version it was
--   made from, and the second of two concurrent edits finds another version (409).
-- * component_history keeps every version of every component with its validity range
--   [valid_from, valid_to): the component as of any moment is the row whose range holds it.
--   A trigger writes it, as the owner, on every insert and update of `component`, whoever
--   makes them (an online edit, a bulk import, a grids rebuild moving a component to another
--   grid), with the acting account and signed action the application names in the
--   transaction (citygrid.actor, citygrid.signed_action, citygrid.component_change).
--   Rows are never deleted and a range, once closed, never changes; deleting a component
--   (a data import replaced) closes its last range.
-- * component_counter: the last serial per district and class, so a new component's code
--   is 6 district + 2 major + 2 minor + the next 6-digit serial, without gaps or races.
-- * component_import: a bulk update file as checked (its rows, the report), applied later as
--   one signed action, all or nothing.
-- * A retired component stays (its code is never given again); it is no longer drawn.

ALTER TABLE component
    ADD COLUMN version    integer NOT NULL DEFAULT 1 CHECK (version > 0),
    ADD COLUMN changed_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN retired_at timestamptz;
UPDATE component SET retired_at = changed_on::timestamptz WHERE NOT in_use;
ALTER TABLE component ADD CHECK ((retired_at IS NULL) = in_use);

CREATE TABLE component_history (
    id               bigserial PRIMARY KEY,
    code             varchar(17) NOT NULL,  -- no foreign key: the history outlives a deletion
    version          integer NOT NULL,
    change           text NOT NULL CHECK (change IN ('insert', 'update', 'add', 'edit', 'move',
                                                     'retire', 'import')),
    valid_from       timestamptz NOT NULL,
    valid_to         timestamptz,
    name             text NOT NULL,
    state            text NOT NULL,
    in_use           boolean NOT NULL,
    responsible_dept text NOT NULL,
    owner_dept       text NOT NULL,
    maintainer_dept  text NOT NULL,
    grid_code        varchar(15) NOT NULL,
    data_source      text NOT NULL,
    geom             geometry(Point, {{SRID}}) NOT NULL,
    actor            text,
    signed_action    bigint REFERENCES signed_action (id),
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE UNIQUE INDEX component_history_open_idx ON component_history (code) WHERE valid_to IS NULL;
CREATE INDEX component_history_code_idx ON component_history (code, valid_from);
CREATE INDEX component_history_geom_idx ON component_history USING gist (geom);

INSERT INTO component_history (code, version, change, valid_from, name, state, in_use,
    responsible_dept, owner_dept, maintainer_dept, grid_code, data_source, geom)
SELECT code, version, 'insert', created_on::timestamptz, name, state, in_use, responsible_dept,
    owner_dept, maintainer_dept, grid_code, data_source, geom
FROM component;

CREATE FUNCTION component_history_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    at timestamptz := clock_timestamp();
    actor text := nullif(current_setting('citygrid.actor', true), '');
    action bigint := nullif(current_setting('citygrid.signed_action', true), '')::bigint;
    change text := coalesce(nullif(current_setting('citygrid.component_change', true), ''),
                            lower(TG_OP));
BEGIN
    IF TG_OP = 'DELETE' THEN  -- a data import replaced: the last version ends here
        UPDATE component_history SET valid_to = at WHERE code = OLD.code AND valid_to IS NULL;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND ROW(OLD.*) IS NOT DISTINCT FROM ROW(NEW.*) THEN
        RETURN NEW;
    END IF;
    UPDATE component_history SET valid_to = at WHERE code = NEW.code AND valid_to IS NULL;
    INSERT INTO component_history (code, version, change, valid_from, name, state, in_use,
        responsible_dept, owner_dept, maintainer_dept, grid_code, data_source, geom, actor,
        signed_action)
    VALUES (NEW.code, NEW.version, change, at, NEW.name, NEW.state, NEW.in_use,
        NEW.responsible_dept, NEW.owner_dept, NEW.maintainer_dept, NEW.grid_code,
        NEW.data_source, NEW.geom, actor, action);
    RETURN NEW;
END
$$;
CREATE TRIGGER component_history_trigger AFTER INSERT OR UPDATE OR DELETE ON component
    FOR EACH ROW EXECUTE FUNCTION component_history_record();

-- Closed ranges never change and rows never go: only the trigger above closes an open one.
CREATE FUNCTION component_history_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.valid_to IS NOT NULL OR NEW.valid_to IS NULL
       OR ROW(OLD.id, OLD.code, OLD.version, OLD.change, OLD.valid_from, OLD.name, OLD.state,
              OLD.in_use, OLD.responsible_dept, OLD.owner_dept, OLD.maintainer_dept,
              OLD.grid_code, OLD.data_source, OLD.geom, OLD.actor, OLD.signed_action)
          IS DISTINCT FROM
          ROW(NEW.id, NEW.code, NEW.version, NEW.change, NEW.valid_from, NEW.name, NEW.state,
              NEW.in_use, NEW.responsible_dept, NEW.owner_dept, NEW.maintainer_dept,
              NEW.grid_code, NEW.data_source, NEW.geom, NEW.actor, NEW.signed_action) THEN
        RAISE EXCEPTION 'component_history is append-only (only an open range may be closed)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER component_history_append_only BEFORE UPDATE OR DELETE ON component_history
    FOR EACH ROW EXECUTE FUNCTION component_history_guard();
CREATE TRIGGER component_history_no_truncate BEFORE TRUNCATE ON component_history
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE component_counter (
    district char(6) NOT NULL,
    major    char(2) NOT NULL,
    minor    varchar(3) NOT NULL,
    last     integer NOT NULL CHECK (last BETWEEN 0 AND 999999),
    PRIMARY KEY (district, major, minor)
);
INSERT INTO component_counter (district, major, minor, last)
SELECT substr(code, 1, 6), major, minor, max(right(code, 6)::integer)
FROM component GROUP BY 1, 2, 3;

CREATE TABLE component_import (
    id            uuid PRIMARY KEY,
    account       text NOT NULL REFERENCES account (name),
    sha256        char(64) NOT NULL,
    filename      text NOT NULL,
    format        text NOT NULL CHECK (format IN ('csv', 'gpkg')),
    rows          jsonb NOT NULL,   -- the checked changes (inside only: they may hold points)
    report        jsonb NOT NULL,   -- what the bureau is shown: per row, no coordinate
    ok            boolean NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    applied_at    timestamptz,
    signed_action bigint REFERENCES signed_action (id),
    CHECK ((applied_at IS NULL) = (signed_action IS NULL))
);
CREATE INDEX component_import_account_idx ON component_import (account, created_at);

-- A component case links to its component (codes are never deleted, so this always holds).
ALTER TABLE city_case ADD CONSTRAINT city_case_component_fk
    FOREIGN KEY (component_code) REFERENCES component (code);
CREATE INDEX city_case_component_idx ON city_case (component_code)
    WHERE component_code IS NOT NULL;

-- The serving role edits components (never their codes, never deletes them), counts serials,
-- keeps import files; it reads the history that the trigger writes.
GRANT INSERT ON component TO citygrid_app;
GRANT UPDATE (name, state, in_use, responsible_dept, owner_dept, maintainer_dept, grid_code,
              data_source, changed_on, geom, origin, version, changed_at, retired_at)
    ON component TO citygrid_app;
GRANT SELECT, INSERT, UPDATE ON component_counter TO citygrid_app;
GRANT SELECT, INSERT ON component_import TO citygrid_app;
GRANT UPDATE (applied_at, signed_action) ON component_import TO citygrid_app;
REVOKE ALL ON component_history FROM PUBLIC, citygrid_app;
GRANT SELECT ON component_history TO citygrid_app;
