-- The tamper-evident audit log: every entry is a leaf of an RFC 9162 Merkle tree, whose
-- right edge (audit_tree) advances in the same transaction as the entries, and whose
-- signed checkpoints are kept. Entries and checkpoints are append-only: the application's
-- role may insert but never update, delete or truncate them, and triggers refuse it for
-- everyone else too (a superuser has to switch the triggers off first, which `citygrid
-- audit verify` then exposes).

ALTER TABLE audit_entry ADD COLUMN leaf_index bigint UNIQUE;
ALTER TABLE audit_entry ADD COLUMN leaf_hash bytea CHECK (length(leaf_hash) = 32);
ALTER TABLE audit_entry ALTER COLUMN at DROP DEFAULT;

CREATE TABLE audit_tree (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    size     bigint NOT NULL CHECK (size >= 0),
    frontier bytea[] NOT NULL
);
INSERT INTO audit_tree (one, size, frontier) VALUES (true, 0, '{}');

CREATE TABLE audit_checkpoint (
    size bigint PRIMARY KEY CHECK (size > 0),
    root bytea NOT NULL CHECK (length(root) = 32),
    at   timestamptz NOT NULL DEFAULT now(),
    note text NOT NULL
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_entry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The application's role: owner (who migrates) and app (who serves) are split.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_app') THEN
        CREATE ROLE citygrid_app LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO citygrid_app', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO citygrid_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO citygrid_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO citygrid_app;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_entry, audit_checkpoint FROM citygrid_app;
REVOKE INSERT, DELETE, TRUNCATE ON audit_tree FROM citygrid_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM citygrid_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO citygrid_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO citygrid_app;
