-- Application maintenance (应用维护): the organisation tree, the class tables with their
-- filing standards, departments and time limits, and the work calendar's overrides, changed
-- by administrators as signed actions and versioned. (The evaluation weights are versioned
-- by eval_config, 0016.)
--
-- * maintenance_change: every change, append-only, naming its signed action. Its id is the
--   version of the area it changed.
-- * limit_version: the time limits (stage defaults, per-class overrides, the classes' own
--   handling limits, the order answer limit) as versions. The newest version is the live
--   tables; when a change supersedes a version, the limits it held are written into its
--   snapshot first (once), so a case pinned to it (city_case.limits_version, set when the
--   case is filed) keeps counting on the limits in force when it was filed.
-- * calendar_override: local holidays and working days beside the settings' ones.
-- * Organisations and account roles stay closed to direct writes by the serving role
--   (0007); it changes them only through functions that require a stored signed action of
--   an active administrator naming the same act, each usable once.

ALTER TABLE organisation DROP CONSTRAINT organisation_kind_check;
ALTER TABLE organisation ADD CONSTRAINT organisation_kind_check
    CHECK (kind IN ('district', 'supervision_centre', 'command_centre', 'bureau', 'department',
                    'street_office', 'community', 'other'));

CREATE TABLE maintenance_change (
    id            bigserial PRIMARY KEY,
    area          text NOT NULL CHECK (area IN ('organisation', 'class', 'limit', 'calendar')),
    subject       text NOT NULL,
    change        jsonb NOT NULL,
    account       text NOT NULL,
    signed_action bigint NOT NULL UNIQUE REFERENCES signed_action (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_change_area_idx ON maintenance_change (area, id);
CREATE TRIGGER maintenance_change_append_only BEFORE UPDATE OR DELETE ON maintenance_change
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER maintenance_change_no_truncate BEFORE TRUNCATE ON maintenance_change
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE limit_version (
    version    integer PRIMARY KEY CHECK (version >= 0),
    change_id  bigint UNIQUE REFERENCES maintenance_change (id),
    snapshot   jsonb,  -- written once, when the version is superseded
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((version = 0) = (change_id IS NULL))
);
INSERT INTO limit_version (version) VALUES (0);

CREATE FUNCTION limit_version_snapshot_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR OLD.snapshot IS NOT NULL OR NEW.snapshot IS NULL
       OR (OLD.version, OLD.change_id, OLD.created_at)
          IS DISTINCT FROM (NEW.version, NEW.change_id, NEW.created_at) THEN
        RAISE EXCEPTION 'limit_version: a version''s snapshot is written once, nothing else changes'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER limit_version_snapshot_once BEFORE UPDATE OR DELETE ON limit_version
    FOR EACH ROW EXECUTE FUNCTION limit_version_snapshot_once();
CREATE TRIGGER limit_version_no_truncate BEFORE TRUNCATE ON limit_version
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

ALTER TABLE city_case ADD COLUMN limits_version integer NOT NULL DEFAULT 0
    REFERENCES limit_version (version);

CREATE TABLE calendar_override (
    day  date PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('holiday', 'workday')),
    note text NOT NULL DEFAULT '' CHECK (length(note) <= 200)
);

-- ---------------------------------------------------------------- signed changes only

CREATE TABLE maintenance_signed_use (
    signed_action bigint PRIMARY KEY REFERENCES signed_action (id),
    used_at       timestamptz NOT NULL DEFAULT now()
);

-- The signer of stored signed action p_action, if it is an active administrator's act
-- p_name on p_resource not used before; names the signer in the change register.
CREATE FUNCTION maintenance_signed(p_action bigint, p_name text, p_resource text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    signer text;
BEGIN
    SELECT s.account INTO signer
    FROM signed_action s
    JOIN account a ON a.name = s.account AND a.active
    JOIN account_role r ON r.account_id = a.id AND r.role = 'admin'
    WHERE s.id = p_action AND s.action = p_name AND s.resource = p_resource;
    IF signer IS NULL THEN
        RAISE EXCEPTION 'no signed action % of an active administrator for % on %',
            p_action, p_name, p_resource USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO maintenance_signed_use (signed_action) VALUES (p_action);
    PERFORM set_config('citygrid.actor', signer, true);
    RETURN signer;
END
$$;

CREATE FUNCTION organisation_save(p_action bigint, p_code text, p_name text, p_kind text,
                                  p_street text, p_parent text, p_active boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM maintenance_signed(p_action, 'org.save', 'organisation ' || p_code);
    INSERT INTO organisation (code, name, kind, street_code, parent_code, active)
    VALUES (p_code, p_name, p_kind, p_street, p_parent, p_active)
    ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind,
        street_code = excluded.street_code, parent_code = excluded.parent_code,
        active = excluded.active;
END
$$;

CREATE FUNCTION account_enable_signed(p_action bigint, p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM maintenance_signed(p_action, 'account.enable', 'account ' || p_name);
    UPDATE account SET active = true, disabled_at = NULL WHERE name = p_name;
    RETURN FOUND;
END
$$;

CREATE FUNCTION account_role_grant_signed(p_action bigint, p_name text, p_role text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM maintenance_signed(p_action, 'account.grant', 'account ' || p_name);
    INSERT INTO account_role (account_id, role)
    SELECT id, p_role FROM account WHERE name = p_name
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$$;

CREATE FUNCTION account_role_revoke_signed(p_action bigint, p_name text, p_role text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM maintenance_signed(p_action, 'account.revoke_role', 'account ' || p_name);
    DELETE FROM account_role
    WHERE role = p_role AND account_id = (SELECT id FROM account WHERE name = p_name);
    RETURN FOUND;
END
$$;

-- pki.enrol_code: a one-time code (its hash) with which the account enrols a browser signing
-- key, for which the signing service then issues a signing certificate.
CREATE FUNCTION enrolment_code_issue_signed(p_action bigint, p_name text, p_code_sha256 text,
                                            p_ttl interval) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    PERFORM maintenance_signed(p_action, 'pki.enrol_code', 'account ' || p_name);
    INSERT INTO enrolment_code (account_id, code_sha256, expires_at)
    SELECT id, p_code_sha256, now() + p_ttl FROM account WHERE name = p_name AND active;
    RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION maintenance_signed(bigint, text, text),
    organisation_save(bigint, text, text, text, text, text, boolean),
    account_enable_signed(bigint, text), account_role_grant_signed(bigint, text, text),
    account_role_revoke_signed(bigint, text, text),
    enrolment_code_issue_signed(bigint, text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION organisation_save(bigint, text, text, text, text, text, boolean),
    account_enable_signed(bigint, text), account_role_grant_signed(bigint, text, text),
    account_role_revoke_signed(bigint, text, text),
    enrolment_code_issue_signed(bigint, text, text, interval) TO citygrid_app;

-- What the serving role may change directly: class texts and limits, stage limits, calendar
-- overrides (each change recorded in maintenance_change with its signed action).
GRANT UPDATE (name, department, filing_condition, closing_condition, time_limit, time_unit)
    ON event_class TO citygrid_app;
GRANT UPDATE (name, department, filing_condition, time_limit, time_unit)
    ON component_class TO citygrid_app;
GRANT UPDATE (amount, unit) ON case_stage_limit TO citygrid_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON case_stage_class_limit, calendar_override TO citygrid_app;
REVOKE UPDATE, DELETE, TRUNCATE ON maintenance_change, maintenance_signed_use FROM citygrid_app;
REVOKE DELETE, TRUNCATE ON limit_version FROM citygrid_app;
REVOKE ALL ON maintenance_signed_use FROM citygrid_app;
