-- One-time codes an administrator hands out of band before a person may enrol a signing key.
-- Only the hash is kept; the signer process (owner role) checks and spends a code. The serving
-- role cannot read, make or spend codes, so a web process can never mint a signing certificate.

CREATE TABLE enrolment_code (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES account (id),
    code_sha256 char(64) NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    certificate text REFERENCES certificate (serial),
    CHECK (expires_at > created_at)
);
CREATE INDEX enrolment_code_account_idx ON enrolment_code (account_id);

REVOKE ALL ON enrolment_code FROM citygrid_app;
REVOKE ALL ON SEQUENCE enrolment_code_id_seq FROM citygrid_app;
