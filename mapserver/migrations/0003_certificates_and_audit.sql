-- Certificates issued by CityGrid's CA, and the audit log's entries.

CREATE TABLE certificate (
    serial            text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]+$'),
    kind              text NOT NULL CHECK (kind IN ('person', 'device', 'server', 'signing')),
    account_id        bigint REFERENCES account (id),
    subject           text NOT NULL,
    sha256            char(64) NOT NULL UNIQUE,
    not_before        timestamptz NOT NULL,
    not_after         timestamptz NOT NULL,
    pem               text NOT NULL,
    issued_at         timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    revocation_reason text,
    CHECK (kind = 'server' OR account_id IS NOT NULL),
    CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
);
CREATE INDEX certificate_account_idx ON certificate (account_id);

CREATE SEQUENCE crl_number;

-- One row per access or act. Values are stored as data; exports escape them.
CREATE TABLE audit_entry (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id  text NOT NULL DEFAULT '',
    account     text NOT NULL DEFAULT '',
    role        text NOT NULL DEFAULT '',
    cert_serial text NOT NULL DEFAULT '',
    cert_sha256 text NOT NULL DEFAULT '',
    client_addr text NOT NULL DEFAULT '',
    method      text NOT NULL DEFAULT '',
    resource    text NOT NULL DEFAULT '',
    action      text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'refused', 'error')),
    status      integer,
    bytes       bigint,
    latency_ms  double precision,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_entry_at_idx ON audit_entry (at);
CREATE INDEX audit_entry_account_idx ON audit_entry (account, at);
