-- What a device sent, as the server received it: the sha256 of a finished tus upload's
-- joined bytes before cleaning, so that the device can check end to end that its photo
-- arrived byte for byte (the stored attachment is the cleaned re-encoding of these bytes).
ALTER TABLE device_upload ADD COLUMN received_sha256 char(64)
    CHECK (received_sha256 IS NULL OR sha256 IS NOT NULL);
