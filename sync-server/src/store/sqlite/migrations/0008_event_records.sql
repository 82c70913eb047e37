-- 0008: events keep their record in its binary form instead of the feed's JSON.
--
-- The JSON (~600 bytes an event, every id written out as text) was most of an events row, so
-- most of what each commit wrote to the WAL and each checkpoint copied again. The record
-- (`EventRecord::encode`, ~100 bytes, what the shift log itself holds) together with the row's
-- columns is the whole event; the feed renders the JSON when it serves the event. The table is
-- also made WITHOUT ROWID: its primary key was a second b-tree beside the rows, written per
-- event too.
--
-- Rows of earlier versions keep their JSON (record NULL) and are served as stored.

CREATE TABLE events_new (
    site_id        TEXT    NOT NULL REFERENCES sites (site_id),
    seq            INTEGER NOT NULL,
    -- The event id's 16 bytes; unique per site through event_ids and the writer's recent ids.
    event_id       BLOB    NOT NULL CHECK (length(event_id) = 16),
    device_id      TEXT    NOT NULL,
    shift_id       TEXT    NOT NULL,
    guard_id       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    checkpoint_id  TEXT,
    device_seq     INTEGER NOT NULL,
    device_time_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    -- EventRecord::encode of the event (its seq, device time, configuration version and body).
    record         BLOB,
    -- The event as the feed serves it, for rows stored before this migration.
    json           TEXT,
    CHECK ((record IS NULL) <> (json IS NULL)),
    PRIMARY KEY (site_id, seq)
) STRICT, WITHOUT ROWID;

INSERT INTO events_new (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
                        checkpoint_id, device_seq, device_time_ms, received_at_ms, record, json)
SELECT site_id, seq, event_id, device_id, shift_id, guard_id, kind,
       checkpoint_id, device_seq, device_time_ms, received_at_ms, NULL, json
FROM events ORDER BY site_id, seq;

DROP TABLE events;
ALTER TABLE events_new RENAME TO events;

CREATE INDEX events_panics ON events (site_id, event_id) WHERE kind = 'panic';
