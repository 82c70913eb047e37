-- 0019: files attached to notes (a shift log's `note` events with attachments), one row per
-- reference in the note's order, written when the note arrives. Who may read a blob is decided
-- by its site's references (store::blobs); this table finds the notes' without decoding the
-- site's events. `seq` is the note's feed sequence number.
CREATE TABLE note_attachments (
    site_id    text   NOT NULL,
    seq        bigint NOT NULL,
    position   integer NOT NULL,
    event_id   bytea  NOT NULL,
    sha256     bytea  NOT NULL,
    media_type text   NOT NULL,
    size       bigint NOT NULL,
    name       text,
    PRIMARY KEY (site_id, seq, position)
);
