-- Witness cosignatures of audit checkpoints (C2SP tlog-cosignature v1). A witness runs on the
-- security office's own machine with its own key; it cosigns a checkpoint only after checking
-- it is consistent with the last one it saw, and posts the cosignature back. The server keeps
-- them so that `citygrid audit verify` can name any entry count or checkpoint below a
-- cosigned size as truncation. Append-only like the audit log: the serving role may read and
-- insert, never update or delete, and triggers refuse that to everyone else too.

CREATE TABLE audit_cosignature (
    id          bigserial PRIMARY KEY,
    witness     text NOT NULL CHECK (length(witness) BETWEEN 1 AND 200),
    size        bigint NOT NULL CHECK (size > 0),
    root        bytea NOT NULL CHECK (length(root) = 32),
    time        bigint NOT NULL CHECK (time >= 0),  -- the witness's POSIX seconds, signed
    body        text NOT NULL,                      -- the checkpoint body it cosigned
    line        text NOT NULL,                      -- its signed-note cosignature line
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (witness, size, time)
);
CREATE INDEX audit_cosignature_size_idx ON audit_cosignature (size DESC);

CREATE TRIGGER audit_cosignature_append_only BEFORE UPDATE OR DELETE ON audit_cosignature
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_cosignature_no_truncate BEFORE TRUNCATE ON audit_cosignature
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The default privileges of migration 0004 would give the serving role UPDATE and DELETE.
REVOKE ALL ON audit_cosignature FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON audit_cosignature TO citygrid_app;
REVOKE ALL ON SEQUENCE audit_cosignature_id_seq FROM PUBLIC, citygrid_app;
GRANT USAGE ON SEQUENCE audit_cosignature_id_seq TO citygrid_app;
