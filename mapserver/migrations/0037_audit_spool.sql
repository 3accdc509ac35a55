-- The audit spool (audit/spool.py): a serving process makes a request's entry durable in a
-- file of its own on its host's disk, then ships the file's lines into audit_queue. Each file
-- is registered here before its first line; `shipped` is how many of its bytes are in the
-- queue, advanced in the same transaction as the rows it shipped, so that after a crash every
-- line is queued exactly once. A file's row goes once the file is fully shipped and deleted.

CREATE TABLE audit_spool (
    host      text NOT NULL,
    path      text NOT NULL,
    shipped   bigint NOT NULL DEFAULT 0 CHECK (shipped >= 0),
    opened_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, path)
);

-- An offset only moves forward: a rewound one would queue lines twice.
CREATE FUNCTION audit_spool_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.shipped < OLD.shipped OR NEW.host <> OLD.host OR NEW.path <> OLD.path THEN
        RAISE EXCEPTION 'audit_spool: a shipped offset only moves forward';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_spool_forward BEFORE UPDATE ON audit_spool
    FOR EACH ROW EXECUTE FUNCTION audit_spool_forward();

REVOKE ALL ON audit_spool FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_spool TO citygrid_app;
