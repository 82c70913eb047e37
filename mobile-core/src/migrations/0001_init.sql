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

-- One row per shift log. A device has one shift open at a time, so a shift's events are the
-- contiguous run of sequence numbers from first_seq up to the next shift's first_seq.
CREATE TABLE shifts (
    id           INTEGER PRIMARY KEY,
    shift_id     TEXT NOT NULL UNIQUE,
    guard_id     TEXT NOT NULL,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER,
    first_seq    INTEGER NOT NULL UNIQUE,
    -- The log's first change (its metadata).
    meta_change  BLOB NOT NULL,
    -- Heads the server acknowledged (32-byte hashes, concatenated) ...
    acked_heads  BLOB NOT NULL DEFAULT x'',
    -- ... and how many of the shift's events they cover: always its first ones, since a log's
    -- history is linear.
    delivered    INTEGER NOT NULL DEFAULT 0,
    -- Last rejection of this log by the server, shown to the app; cleared on acceptance.
    reject_code    TEXT,
    reject_message TEXT
) STRICT;

-- One row per event, appended: the change that carries it in its shift log (which holds the
-- event record), plus what is needed without loading the log. No secondary index, so a
-- recording commit writes as few pages as possible.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    shift       INTEGER NOT NULL REFERENCES shifts(id),
    event_id    BLOB NOT NULL,
    wall_ms     INTEGER NOT NULL,
    hlc_wall    INTEGER NOT NULL,
    hlc_counter INTEGER NOT NULL,
    change      BLOB NOT NULL
) STRICT;

-- Outcome of the last sync attempts, for the app's status line.
CREATE TABLE sync_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_attempt_ms INTEGER,
    last_success_ms INTEGER,
    last_error      TEXT
) STRICT;
INSERT INTO sync_state (id) VALUES (1);
