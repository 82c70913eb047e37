-- 0001: sites, devices, shift-log documents stored as automerge chunks, and the event projection.
-- Every table is keyed by site first, so the same layout can be partitioned by site later.
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE sites (
    site_id    TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    -- The server sequence number the next new event of this site gets (the feed's cursor).
    next_seq   INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    site_id       TEXT    NOT NULL REFERENCES sites (site_id),
    device_id     TEXT    NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_sync_at  INTEGER NOT NULL,
    -- Events the device said it still held unacknowledged at its last sync.
    last_pending  INTEGER NOT NULL,
    -- Server time minus device time at the last sync: positive when the device clock is behind.
    clock_skew_ms INTEGER NOT NULL,
    PRIMARY KEY (site_id, device_id)
) STRICT;

CREATE TABLE docs (
    site_id     TEXT    NOT NULL REFERENCES sites (site_id),
    doc_id      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    device_id   TEXT    NOT NULL,
    guard_id    TEXT    NOT NULL,
    -- The document's heads: sorted 32-byte change hashes, concatenated.
    heads       BLOB    NOT NULL,
    chunk_count INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (site_id, doc_id)
) STRICT;

-- Raw automerge change chunks or one compacted save; their concatenation in chunk_id order
-- loads the document.
CREATE TABLE doc_chunks (
    site_id  TEXT    NOT NULL,
    doc_id   TEXT    NOT NULL,
    chunk_id INTEGER NOT NULL,
    bytes    BLOB    NOT NULL,
    PRIMARY KEY (site_id, doc_id, chunk_id),
    FOREIGN KEY (site_id, doc_id) REFERENCES docs (site_id, doc_id)
) STRICT;

CREATE TABLE events (
    site_id        TEXT    NOT NULL REFERENCES sites (site_id),
    seq            INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    shift_id       TEXT    NOT NULL,
    guard_id       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    checkpoint_id  TEXT,
    device_seq     INTEGER NOT NULL,
    device_time_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    -- The event as the control-room API serves it, stored once so the feed never re-encodes it.
    json           TEXT    NOT NULL,
    PRIMARY KEY (site_id, seq),
    UNIQUE (site_id, event_id)
) STRICT;
