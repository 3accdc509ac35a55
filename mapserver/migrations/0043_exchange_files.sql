-- City–district exchange: the photos and voice recordings a message carries.
--
-- A message's content lists its attachments (sha256, kind, media type, size and the
-- picture's size or the recording's length), so the sender's log vouches for each file's
-- hash as for every other byte of the content. The files travel beside the bundle, each by
-- its hash (PUT /exchange/files/SHA256), before the bundle that names them:
--
-- * exchange_file: the files, by their SHA-256, of messages this install sent (copied from
--   the case attachments or uploads when the message is queued, so that nothing purged or
--   changed later can hold the message back) and of files the peer delivered (checked to
--   hash to their name and to carry nothing but pixels or audio frames). Never changed;
--   a row is the same bytes whoever put it there first.
-- * case_attachment.source_id: the exchange message that brought an attachment of a case
--   the peer forwarded (owned by the peer's account, linked to the case's creation). The
--   same photo may come in two forwarded cases, so the one-upload-per-person rule applies to
--   uploads only.

CREATE TABLE exchange_file (
    sha256      char(64) PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    kind        text NOT NULL CHECK (kind IN ('photo', 'voice')),
    media_type  text NOT NULL CHECK (media_type IN ('image/jpeg', 'image/png', 'audio/amr',
                                                    'audio/amr-wb', 'audio/mpeg')),
    data        bytea NOT NULL,
    bytes       integer NOT NULL CHECK (bytes > 0 AND bytes = octet_length(data)),
    width       integer CHECK (width > 0),
    height      integer CHECK (height > 0),
    duration_ms integer CHECK (duration_ms >= 0),
    received    boolean NOT NULL,  -- delivered by the peer (else copied for a message sent)
    stored_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'photo') = (width IS NOT NULL AND height IS NOT NULL)),
    CHECK ((kind = 'voice') = (duration_ms IS NOT NULL))
);
CREATE INDEX exchange_file_received_idx ON exchange_file (stored_at) WHERE received;
-- The messages that list a file (its bound counts the peer's files no message names).
CREATE INDEX exchange_inbox_attachments_idx ON exchange_inbox
    USING gin ((content -> 'attachments') jsonb_path_ops);

CREATE TRIGGER exchange_file_unchanged BEFORE UPDATE ON exchange_file
    FOR EACH ROW EXECUTE FUNCTION case_attachment_unchanged();

ALTER TABLE case_attachment ADD COLUMN source_id text REFERENCES exchange_inbox (source_id);
ALTER TABLE case_attachment DROP CONSTRAINT case_attachment_uploader_sha256_key;
CREATE UNIQUE INDEX case_attachment_upload_key ON case_attachment (uploader, sha256)
    WHERE source_id IS NULL;
CREATE UNIQUE INDEX case_attachment_exchanged_key ON case_attachment (source_id, sha256)
    WHERE source_id IS NOT NULL;

REVOKE ALL ON exchange_file FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON exchange_file TO citygrid_app;
