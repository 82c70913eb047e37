-- The bytes of files attached to incidents, kept by content (SHA-256) in the store itself: the
-- bytes and the incident's reference to them commit in one transaction, so a reference never
-- exists without its bytes, whatever moment the app is killed at, and the file stays as private
-- as the rest of the store. Uploaded after the incident that references them is delivered.
CREATE TABLE attachment_blobs (
    sha256      BLOB    PRIMARY KEY CHECK (length(sha256) = 32),
    bytes       BLOB    NOT NULL,
    size        INTEGER NOT NULL,
    -- The incident that first referenced it: its delivery lets the upload start.
    incident_id TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    -- When the server said it held the whole; NULL until then.
    uploaded_ms INTEGER
);

CREATE INDEX attachment_blobs_to_upload ON attachment_blobs (created_ms)
    WHERE uploaded_ms IS NULL;
