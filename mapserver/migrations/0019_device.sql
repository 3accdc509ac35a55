-- Inspectors' devices over a bad mobile link (mapserver/device/).
--
-- device_idempotency: the first answer to a state-changing request, per account and
-- Idempotency-Key (IETF httpapi idempotency-key draft), kept 24 hours; written in the same
-- transaction as the change it answers, so a key is stored exactly when its change is.
--
-- device_upload / device_upload_chunk: tus 1.0 resumable uploads of photos and voice. Each
-- PATCH adds one verified chunk (its checksum checked); the upload's offset advances with
-- it. When the last byte arrives the chunks are joined, cleaned (mapserver.cases.media) and
-- stored as a case attachment; the chunks are then removed. Unfinished uploads expire and
-- are removed with their chunks. The serving role may delete here: none of it is evidence.

CREATE TABLE device_idempotency (
    account     text NOT NULL REFERENCES account (name),
    key         text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint char(64) NOT NULL,  -- sha256 of method, path and body
    status      smallint NOT NULL,
    media_type  text NOT NULL,
    body        bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',  -- e.g. the Location of a created upload
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (account, key)
);
CREATE INDEX device_idempotency_expires_idx ON device_idempotency (expires_at);

CREATE TABLE device_upload (
    id          uuid PRIMARY KEY,
    account     text NOT NULL REFERENCES account (name),
    kind        text NOT NULL CHECK (kind IN ('photo', 'voice')),
    media_type  text NOT NULL,
    length      integer NOT NULL CHECK (length > 0),
    upload_offset integer NOT NULL DEFAULT 0 CHECK (upload_offset BETWEEN 0 AND length),
    sha256      char(64),  -- of the stored (cleaned) attachment, once complete
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CHECK ((sha256 IS NULL) OR upload_offset = length)
);
CREATE INDEX device_upload_account_idx ON device_upload (account, created_at);
CREATE INDEX device_upload_expires_idx ON device_upload (expires_at) WHERE sha256 IS NULL;

CREATE TABLE device_upload_chunk (
    upload_id   uuid NOT NULL REFERENCES device_upload (id) ON DELETE CASCADE,
    start       integer NOT NULL CHECK (start >= 0),
    data        bytea NOT NULL CHECK (octet_length(data) > 0),
    PRIMARY KEY (upload_id, start)
);

-- A device's report: the device's own clock beside the server's, and the GPS fix (WGS84)
-- with the salt of the digest its signature covers, so that the fix can be checked against
-- the signed action later. Inside the secure zone only: no client ever reads this table.
CREATE TABLE device_report (
    case_id     bigint PRIMARY KEY REFERENCES city_case (id),
    account     text NOT NULL REFERENCES account (name),
    client_time timestamptz NOT NULL,
    server_time timestamptz NOT NULL,
    fix_lon     double precision,
    fix_lat     double precision,
    fix_salt    text,
    CHECK ((fix_lon IS NULL) = (fix_lat IS NULL) AND (fix_lon IS NULL) = (fix_salt IS NULL))
);
REVOKE ALL ON device_report FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON device_report TO citygrid_app;

REVOKE ALL ON device_idempotency, device_upload, device_upload_chunk FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON device_idempotency, device_upload, device_upload_chunk TO citygrid_app;
