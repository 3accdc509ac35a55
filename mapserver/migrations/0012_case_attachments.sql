-- Case attachments: photos and voice recordings, stored as the cleaned bytes (photos
-- re-encoded from their pixels, without EXIF/GPS, XMP, ICC or comments) in the database,
-- so that an attachment, the signed action naming its hash, the case event it belongs to
-- and the audit entry commit together and are backed up together.
--
-- An upload is a row of case_attachment, owned by its uploader until a signed create or
-- transition links it (case_attachment_link, one link per attachment at most). Neither
-- table is ever updated; the serving role may only read and insert. A linked attachment
-- can never be deleted (the link's foreign key, and the link is append-only); an unlinked
-- one can be purged by the owner role only.

CREATE TABLE case_attachment (
    id          bigserial PRIMARY KEY,
    sha256      char(64) NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    kind        text NOT NULL CHECK (kind IN ('photo', 'voice')),
    media_type  text NOT NULL CHECK (media_type IN ('image/jpeg', 'image/png', 'audio/amr',
                                                    'audio/amr-wb', 'audio/mpeg')),
    data        bytea NOT NULL,
    bytes       integer NOT NULL CHECK (bytes > 0 AND bytes = octet_length(data)),
    width       integer CHECK (width > 0),
    height      integer CHECK (height > 0),
    duration_ms integer CHECK (duration_ms >= 0),
    uploader    text NOT NULL REFERENCES account (name),
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (uploader, sha256),
    CHECK ((kind = 'photo') = (width IS NOT NULL AND height IS NOT NULL)),
    CHECK ((kind = 'voice') = (duration_ms IS NOT NULL))
);
CREATE INDEX case_attachment_sha256_idx ON case_attachment (sha256);
CREATE INDEX case_attachment_uploader_idx ON case_attachment (uploader, uploaded_at);

CREATE TABLE case_attachment_link (
    attachment_id bigint PRIMARY KEY REFERENCES case_attachment (id),  -- linked once at most
    case_id       bigint NOT NULL REFERENCES city_case (id),
    event_id      bigint NOT NULL REFERENCES case_event (id),
    position      smallint NOT NULL CHECK (position >= 0),  -- its place in the signed list
    linked_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, position)
);
CREATE INDEX case_attachment_link_case_idx ON case_attachment_link (case_id, event_id);

CREATE FUNCTION case_attachment_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case attachments never change: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER case_attachment_unchanged BEFORE UPDATE ON case_attachment
    FOR EACH ROW EXECUTE FUNCTION case_attachment_unchanged();
CREATE TRIGGER case_attachment_link_append_only BEFORE UPDATE OR DELETE ON case_attachment_link
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER case_attachment_link_no_truncate BEFORE TRUNCATE ON case_attachment_link
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The default privileges of migration 0004 would give the serving role UPDATE and DELETE.
REVOKE ALL ON case_attachment, case_attachment_link FROM PUBLIC, citygrid_app;
GRANT SELECT, INSERT ON case_attachment, case_attachment_link TO citygrid_app;
REVOKE ALL ON SEQUENCE case_attachment_id_seq FROM PUBLIC, citygrid_app;
GRANT USAGE ON SEQUENCE case_attachment_id_seq TO citygrid_app;
