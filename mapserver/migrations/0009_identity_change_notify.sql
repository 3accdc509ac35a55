-- Every change to who may do what (accounts, their roles, certificates, organisations)
-- notifies the serving processes, which drop their cached identities at once: a disabled
-- account or a revoked certificate is refused by the next request, not after a cache TTL.
-- Statement-level triggers: one notification per statement; NOTIFY is sent at commit and
-- identical notifications within one transaction are folded into one.

CREATE FUNCTION citygrid_identity_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citygrid_identity', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER account_identity_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON account
    FOR EACH STATEMENT EXECUTE FUNCTION citygrid_identity_changed();
CREATE TRIGGER account_role_identity_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON account_role
    FOR EACH STATEMENT EXECUTE FUNCTION citygrid_identity_changed();
CREATE TRIGGER certificate_identity_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON certificate
    FOR EACH STATEMENT EXECUTE FUNCTION citygrid_identity_changed();
CREATE TRIGGER organisation_identity_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON organisation
    FOR EACH STATEMENT EXECUTE FUNCTION citygrid_identity_changed();
