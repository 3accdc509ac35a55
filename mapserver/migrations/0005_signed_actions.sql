-- Signed actions: single-use server nonces, and every verified signed action kept with its
-- exact payload bytes, signature and signing certificate for later, offline verification.

CREATE TABLE action_nonce (
    nonce      text PRIMARY KEY CHECK (length(nonce) >= 16),
    account    text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX action_nonce_expiry_idx ON action_nonce (expires_at);

CREATE TABLE signed_action (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    account          text NOT NULL,
    action           text NOT NULL,
    resource         text NOT NULL,
    payload          bytea NOT NULL,
    signature        bytea NOT NULL,
    certificate      text NOT NULL,
    signature_sha256 char(64) NOT NULL UNIQUE,
    nonce            text NOT NULL UNIQUE REFERENCES action_nonce (nonce)
);
CREATE INDEX signed_action_account_idx ON signed_action (account, at);

CREATE TRIGGER signed_action_append_only BEFORE UPDATE OR DELETE ON signed_action
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER signed_action_no_truncate BEFORE TRUNCATE ON signed_action
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

GRANT SELECT, INSERT, UPDATE ON action_nonce TO citygrid_app;
GRANT SELECT, INSERT ON signed_action TO citygrid_app;
REVOKE UPDATE, DELETE, TRUNCATE ON signed_action FROM citygrid_app;
GRANT USAGE, SELECT ON SEQUENCE signed_action_id_seq TO citygrid_app;
