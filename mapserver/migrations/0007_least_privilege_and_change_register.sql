-- Least privilege for the serving processes, and a tamper-evident register of every change
-- to accounts, roles, certificates and organisations.
--
-- * citygrid_map: a read-only role for Mapnik and the tile service, SELECT on map tables only.
-- * citygrid_app: only what requests do. It reads; it appends audit entries, nonces and signed
--   actions; it registers and revokes certificates; it adds and disables accounts only through
--   the SECURITY DEFINER functions account_create / account_disable. It cannot grant a role to
--   an existing account, re-activate an account or change an organisation.
-- * Revocation is permanent and an issued certificate never changes otherwise, for everyone.
-- * Separation of duties: incompatible_role (mirrors auth.policy.INCOMPATIBLE_ROLES) is
--   enforced by a trigger, so no account holds two incompatible roles, whoever inserts them.
-- * Every insert, update and delete of account, account_role, certificate, organisation, role
--   and incompatible_role, by any role, is recorded by a trigger in register_change: a hash
--   chain (hash = SHA-256(previous hash || body as text)) that is append-only like the audit
--   log, whose head is kept in register_head, and which `citygrid audit verify` recomputes.

-- ---------------------------------------------------------------- the map role

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_map') THEN
        BEGIN
            CREATE ROLE citygrid_map LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by a migration of another database of this cluster
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO citygrid_map', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO citygrid_map;
GRANT SELECT ON district, street, community, unit_grid, component, component_class,
    building, road_surface, road_line, water, green, railway, wall, annotation TO citygrid_map;

-- ---------------------------------------------------------------- the app role, narrowed

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON
    install_info, district, street, community, unit_grid, organisation, role, account,
    account_role, component_class, event_class, component, address, building, road_surface,
    road_line, water, green, railway, wall, annotation, certificate
    FROM citygrid_app;
GRANT INSERT, UPDATE (revoked_at, revocation_reason) ON certificate TO citygrid_app;
REVOKE DELETE, TRUNCATE ON action_nonce FROM citygrid_app;
REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM citygrid_app;  -- nextval needs USAGE only

-- ---------------------------------------------------------------- the change register

CREATE TABLE register_change (
    id        bigint PRIMARY KEY CHECK (id > 0),
    body      jsonb NOT NULL,
    prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea NOT NULL UNIQUE CHECK (length(hash) = 32)
);
CREATE TABLE register_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    size bigint NOT NULL CHECK (size >= 0),
    head bytea NOT NULL CHECK (length(head) = 32)
);
INSERT INTO register_head (one, size, head) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

CREATE TRIGGER register_change_append_only BEFORE UPDATE OR DELETE ON register_change
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER register_change_no_truncate BEFORE TRUNCATE ON register_change
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER register_head_no_delete BEFORE DELETE ON register_head
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER register_head_no_truncate BEFORE TRUNCATE ON register_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Review reads the register through the app role; nobody but this trigger function writes it.
REVOKE ALL ON register_change, register_head FROM PUBLIC, citygrid_app;
GRANT SELECT ON register_change TO citygrid_app;

-- Runs as the owner (the app role has no right on register_*), records who really acted:
-- the login role or the role set with SET ROLE, and the application's actor if it named one.
CREATE FUNCTION register_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    before jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) - 'pem' END;
    after  jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) - 'pem' END;
    changed jsonb := coalesce(after, before);
    who    text := CASE WHEN current_setting('role') = 'none' THEN session_user::text
                        ELSE current_setting('role') END;
    owner_name text;
    n      bigint;
    prev   bytea;
    body   jsonb;
    h      bytea;
BEGIN
    IF TG_OP = 'UPDATE' AND before = after THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'account' THEN
        owner_name := changed ->> 'name';
    ELSIF TG_TABLE_NAME IN ('account_role', 'certificate') THEN
        SELECT a.name INTO owner_name FROM account a WHERE a.id = (changed ->> 'account_id')::bigint;
    END IF;
    UPDATE register_head SET size = size + 1 RETURNING size, head INTO n, prev;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the change register has lost its head row'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    body := jsonb_build_object(
        'seq', n,
        'at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'table', TG_TABLE_NAME,
        'op', lower(TG_OP),
        'db_user', who,
        'actor', coalesce(current_setting('citygrid.actor', true), ''),
        'account', owner_name,
        'old', before,
        'new', after);
    h := sha256(prev || convert_to(body::text, 'UTF8'));
    INSERT INTO register_change (id, body, prev_hash, hash) VALUES (n, body, prev, h);
    UPDATE register_head SET head = h;
    RETURN NULL;
END
$$;

CREATE FUNCTION register_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'changes to % are recorded row by row: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- ---------------------------------------------------------------- separation of duties

CREATE TABLE incompatible_role (
    role_a text NOT NULL REFERENCES role (name),
    role_b text NOT NULL REFERENCES role (name),
    PRIMARY KEY (role_a, role_b),
    CHECK (role_a < role_b)
);
-- Keep equal to auth.policy.INCOMPATIBLE_ROLES (tests/test_privileges.py checks it).
INSERT INTO incompatible_role (role_a, role_b) VALUES
    ('admin', 'security_officer'),
    ('bureau_handler', 'shift_leader'),
    ('bureau_handler', 'dispatcher');
REVOKE ALL ON incompatible_role FROM PUBLIC, citygrid_app;
GRANT SELECT ON incompatible_role TO citygrid_app;

CREATE FUNCTION account_role_separation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    clash text;
BEGIN
    -- One role change per account at a time, so two concurrent grants cannot both pass.
    PERFORM 1 FROM account WHERE id = NEW.account_id FOR NO KEY UPDATE;
    SELECT r.role INTO clash
    FROM account_role r
    JOIN incompatible_role i
      ON (i.role_a = NEW.role AND i.role_b = r.role) OR (i.role_b = NEW.role AND i.role_a = r.role)
    WHERE r.account_id = NEW.account_id
    LIMIT 1;
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'separation of duties: roles % and % may not be held by one account',
            least(clash, NEW.role), greatest(clash, NEW.role)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'separation_of_duties';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER account_role_separation BEFORE INSERT OR UPDATE ON account_role
    FOR EACH ROW EXECUTE FUNCTION account_role_separation();

-- ---------------------------------------------------------------- certificates

CREATE FUNCTION certificate_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'issued certificates stay in the register: % on certificate refused',
            TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.revoked_at IS NOT NULL AND to_jsonb(NEW) IS DISTINCT FROM to_jsonb(OLD) THEN
        RAISE EXCEPTION 'certificate % is revoked, and revocation is permanent', OLD.serial
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF to_jsonb(NEW) - 'revoked_at' - 'revocation_reason'
       IS DISTINCT FROM to_jsonb(OLD) - 'revoked_at' - 'revocation_reason' THEN
        RAISE EXCEPTION 'an issued certificate changes only by revocation (certificate %)',
            OLD.serial USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER certificate_rules BEFORE UPDATE OR DELETE ON certificate
    FOR EACH ROW EXECUTE FUNCTION certificate_rules();
CREATE TRIGGER certificate_no_truncate BEFORE TRUNCATE ON certificate
    FOR EACH STATEMENT EXECUTE FUNCTION certificate_rules();

-- ---------------------------------------------------------------- recording triggers

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account', 'account_role', 'certificate', 'organisation', 'role',
                             'incompatible_role'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION register_record()', t || '_register', t);
        IF t <> 'certificate' THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                           'FOR EACH STATEMENT EXECUTE FUNCTION register_no_truncate()',
                           t || '_no_truncate', t);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION register_record(), account_role_separation() FROM PUBLIC;

-- ---------------------------------------------------------------- what the app may change

-- account.add: the account and its roles in one call (the separation trigger applies).
CREATE FUNCTION account_create(p_name text, p_display_name text, p_org_code text,
                               p_roles text[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    new_id bigint;
    r      text;
BEGIN
    INSERT INTO account (name, display_name, org_code)
    VALUES (p_name, coalesce(p_display_name, ''), p_org_code)
    RETURNING id INTO new_id;
    FOREACH r IN ARRAY (SELECT coalesce(array_agg(DISTINCT x), '{}') FROM unnest(p_roles) x) LOOP
        INSERT INTO account_role (account_id, role) VALUES (new_id, r);
    END LOOP;
    RETURN new_id;
END
$$;

-- account.disable: one way only; enabling again is an owner's (command line) act.
CREATE FUNCTION account_disable(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE account SET active = false, disabled_at = now() WHERE name = p_name;
    RETURN FOUND;
END
$$;

REVOKE ALL ON FUNCTION account_create(text, text, text, text[]), account_disable(text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION account_create(text, text, text, text[]), account_disable(text)
    TO citygrid_app;
