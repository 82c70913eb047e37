-- Incidents this phone takes part in: the automerge document as saved after every change, the
-- server heads it last merged, and whether it holds changes the server has not acknowledged.
CREATE TABLE incidents (
    incident_id    TEXT    PRIMARY KEY,
    doc            BLOB    NOT NULL,
    synced_heads   BLOB    NOT NULL,
    pending        INTEGER NOT NULL,
    reject_code    TEXT,
    reject_message TEXT,
    updated_ms     INTEGER NOT NULL
);

-- The latest site configuration the server sent (one row).
CREATE TABLE site_config (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    version     INTEGER NOT NULL,
    config      BLOB    NOT NULL,
    received_ms INTEGER NOT NULL
);

-- Panic alarms raised on this phone and whether the control room has acknowledged them.
CREATE TABLE alarms (
    event_id    BLOB    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    acked_by    TEXT,
    acked_at_ms INTEGER
);
-- The latest alarm raised before this version (earlier ones were not tracked).
INSERT INTO alarms (event_id, seq)
    SELECT event_id, seq FROM events e
    WHERE e.seq = (SELECT urgent_seq FROM sync_state);
