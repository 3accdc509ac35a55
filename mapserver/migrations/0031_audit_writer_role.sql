-- The audit writer role: appends to the audit log and sequences it, nothing else. The
-- renderer service of the secure zone (two zones) keeps its own tamper-evident log in its
-- own database, yet must not connect as the serving role citygrid_app (which the renderer's
-- database does not admit) and its map role citygrid_map stays read-only. citygrid_audit
-- may insert into the queue and the log, advance the tree and sign checkpoints; it can
-- neither change nor remove an entry (the triggers of 0004, 0018 and 0021 refuse that to
-- everyone) and reads no other table.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citygrid_audit') THEN
        BEGIN
            CREATE ROLE citygrid_audit LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by a migration of another database of this cluster
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO citygrid_audit', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO citygrid_audit;
GRANT SELECT, INSERT ON audit_queue, audit_entry, audit_tile, audit_checkpoint TO citygrid_audit;
GRANT SELECT, UPDATE ON audit_tree TO citygrid_audit;
GRANT USAGE ON SEQUENCE audit_entry_id_seq TO citygrid_audit;
