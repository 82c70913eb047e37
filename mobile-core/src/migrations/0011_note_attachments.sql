-- Files attached to notes in the shift log, as well as to incidents. A blob is first referenced
-- either by an incident (whose delivery lets its upload start) or by a note event, named by its
-- sequence number (the note's delivery lets the upload start). SQLite cannot relax a NOT NULL
-- column in place, so the table is rebuilt.
CREATE TABLE attachment_blobs_new (
    sha256      BLOB    PRIMARY KEY CHECK (length(sha256) = 32),
    bytes       BLOB    NOT NULL,
    size        INTEGER NOT NULL,
    -- The incident that first referenced it ...
    incident_id TEXT,
    -- ... or the note event (events.seq) that did.
    event_seq   INTEGER,
    created_ms  INTEGER NOT NULL,
    -- When the server said it held the whole; NULL until then.
    uploaded_ms INTEGER,
    CHECK ((incident_id IS NULL) <> (event_seq IS NULL))
);
INSERT INTO attachment_blobs_new (sha256, bytes, size, incident_id, created_ms, uploaded_ms)
    SELECT sha256, bytes, size, incident_id, created_ms, uploaded_ms FROM attachment_blobs;
DROP TABLE attachment_blobs;
ALTER TABLE attachment_blobs_new RENAME TO attachment_blobs;
CREATE INDEX attachment_blobs_to_upload ON attachment_blobs (created_ms)
    WHERE uploaded_ms IS NULL;
