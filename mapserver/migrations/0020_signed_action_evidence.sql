-- Evidence that lets a signed action be verified offline at the log's time, not the time its
-- signer wrote: every CRL the CA published is kept (a bundle carries the one current when the
-- action was logged, and the newest), and an action's audit entry is found by the SHA-256 of
-- its signature. Append-only like the log: the serving role and the signer may read and
-- insert, never update or delete.

CREATE TABLE crl_history (
    number      bigint PRIMARY KEY,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL CHECK (next_update > this_update),
    pem         text NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crl_history_this_update_idx ON crl_history (this_update);

CREATE TRIGGER crl_history_append_only BEFORE UPDATE OR DELETE ON crl_history
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER crl_history_no_truncate BEFORE TRUNCATE ON crl_history
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

REVOKE ALL ON crl_history FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON crl_history TO citygrid_app;

-- Only the entries of signed actions carry the key, so the index stays small and tile
-- requests never touch it.
CREATE INDEX audit_entry_signature_idx ON audit_entry ((detail ->> 'signature_sha256'))
    WHERE detail ? 'signature_sha256';
