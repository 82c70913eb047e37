-- 0021: files attached to notes (a shift log's `note` events with attachments), one row per
-- reference in the note's order, written when the note arrives. Who may read a blob is decided
-- by its site's references (store::blobs); this table finds the notes' without decoding the
-- site's events. `seq` is the note's feed sequence number.
CREATE TABLE note_attachments (
    site_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    event_id   BLOB    NOT NULL,
    sha256     BLOB    NOT NULL,
    media_type TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    name       TEXT,
    PRIMARY KEY (site_id, seq, position)
) STRICT;
