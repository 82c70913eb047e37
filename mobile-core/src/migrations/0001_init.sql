-- The device: one row. The device id names the automerge actor of every log it writes.
CREATE TABLE device (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    device_id   TEXT NOT NULL,
    site_id     TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    -- Highest hybrid-clock reading seen from a server; local readings are in events.
    hlc_wall    INTEGER NOT NULL DEFAULT 0,
    hlc_counter INTEGER NOT NULL DEFAULT 0,
    config_version INTEGER NOT NULL DEFAULT 0
) STRICT;

-- One row per shift log. meta_change is the log's first change (its metadata).
CREATE TABLE shifts (
    shift_id     TEXT PRIMARY KEY,
    guard_id     TEXT NOT NULL,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER,
    meta_change  BLOB NOT NULL,
    -- Heads the server acknowledged (32-byte hashes, concatenated).
    acked_heads  BLOB NOT NULL DEFAULT x'',
    -- Last rejection of this log by the server, shown to the app; cleared on acceptance.
    reject_code    TEXT,
    reject_message TEXT
) STRICT;

-- One row per event: the record for listing and the change that carries it in the shift log.
CREATE TABLE events (
    event_id    TEXT PRIMARY KEY,
    shift_id    TEXT NOT NULL REFERENCES shifts(shift_id),
    seq         INTEGER NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    wall_ms     INTEGER NOT NULL,
    hlc_wall    INTEGER NOT NULL,
    hlc_counter INTEGER NOT NULL,
    record      BLOB NOT NULL,
    change_hash BLOB NOT NULL,
    change      BLOB NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX events_by_shift ON events(shift_id, seq);
CREATE INDEX events_pending ON events(delivered, seq);

-- Outcome of the last sync attempts, for the app's status line.
CREATE TABLE sync_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_attempt_ms INTEGER,
    last_success_ms INTEGER,
    last_error      TEXT
) STRICT;
INSERT INTO sync_state (id) VALUES (1);
