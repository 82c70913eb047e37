-- 0001: sites, devices, shift-log documents stored as automerge chunks, and the event projection
-- (the PostgreSQL form of SQLite's 0001 and 0002). Every table is keyed by site first, so that a
-- distributed engine can shard every table by site_id and keep a site's rows together.
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE sites (
    site_id    text   NOT NULL PRIMARY KEY,
    name       text   NOT NULL,
    -- The server sequence number the next new event of this site gets (the feed's cursor). The
    -- write transaction that adds events locks this row, which serialises a site's event writers
    -- across every server instance.
    next_seq   bigint NOT NULL DEFAULT 1 CHECK (next_seq >= 1),
    created_at bigint NOT NULL
);

CREATE TABLE devices (
    site_id       text   NOT NULL REFERENCES sites (site_id),
    device_id     text   NOT NULL,
    first_seen    bigint NOT NULL,
    last_sync_at  bigint NOT NULL,
    -- Events the device said it still held unacknowledged at its last sync.
    last_pending  bigint NOT NULL,
    -- Server time minus device time at the last sync: positive when the device clock is behind.
    clock_skew_ms bigint NOT NULL,
    PRIMARY KEY (site_id, device_id)
);

CREATE TABLE docs (
    site_id     text   NOT NULL REFERENCES sites (site_id),
    doc_id      text   NOT NULL,
    kind        text   NOT NULL,
    device_id   text   NOT NULL,
    guard_id    text   NOT NULL,
    -- The document's heads: sorted 32-byte change hashes, concatenated. The write phase locks
    -- this row (SELECT .. FOR UPDATE) and compares the heads to the ones its merge started from.
    heads       bytea  NOT NULL,
    chunk_count bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (site_id, doc_id)
);

-- Raw automerge change chunks or one compacted save; their concatenation in chunk_id order
-- loads the document.
CREATE TABLE doc_chunks (
    site_id  text   NOT NULL,
    doc_id   text   NOT NULL,
    chunk_id bigint NOT NULL,
    bytes    bytea  NOT NULL,
    PRIMARY KEY (site_id, doc_id, chunk_id),
    FOREIGN KEY (site_id, doc_id) REFERENCES docs (site_id, doc_id)
);

CREATE TABLE events (
    site_id        text   NOT NULL REFERENCES sites (site_id),
    seq            bigint NOT NULL,
    -- The event id's 16 bytes (its text form is in json).
    event_id       bytea  NOT NULL CHECK (length(event_id) = 16),
    device_id      text   NOT NULL,
    shift_id       text   NOT NULL,
    guard_id       text   NOT NULL,
    kind           text   NOT NULL,
    checkpoint_id  text,
    device_seq     bigint NOT NULL,
    device_time_ms bigint NOT NULL,
    received_at_ms bigint NOT NULL,
    -- The event as the control-room API serves it, stored once so the feed never re-encodes it.
    json           text   NOT NULL,
    PRIMARY KEY (site_id, seq),
    -- An event id has at most one row per site, whatever is pushed again.
    UNIQUE (site_id, event_id)
);
