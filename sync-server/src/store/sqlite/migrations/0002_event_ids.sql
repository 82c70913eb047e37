-- 0002: the event-id index in two levels, and event ids as their 16 bytes.
--
-- Event ids arrive in random order (UUIDv4 from some apps), so a unique index on
-- events (site_id, event_id) takes every new event to a random page: each commit rewrote most of
-- that index (at 1M events, ~4 KiB written per event on top of the event itself). Now:
-- - events.event_id is the UUID's 16 bytes (its text form is in `json`), and events has no
--   index on it;
-- - event_ids_recent holds the ids of the latest events: small, so a commit rewrites few pages;
-- - event_ids holds all older ids; the writer moves event_ids_recent into it in bulk, in key
--   order, once it has grown past a threshold, so each of its pages is written once per fold.
-- Every event's id is in exactly one of the two tables, with the event's seq; the writer looks
-- an id up in both before it inserts an event, in the same transaction.

CREATE TABLE events_new (
    site_id        TEXT    NOT NULL REFERENCES sites (site_id),
    seq            INTEGER NOT NULL,
    -- The event id's 16 bytes; unique per site through event_ids / event_ids_recent.
    event_id       BLOB    NOT NULL CHECK (length(event_id) = 16),
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
    PRIMARY KEY (site_id, seq)
) STRICT;

INSERT INTO events_new (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
                        checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
SELECT site_id, seq, unhex(replace(event_id, '-', '')), device_id, shift_id, guard_id, kind,
       checkpoint_id, device_seq, device_time_ms, received_at_ms, json
FROM events ORDER BY site_id, seq;

DROP TABLE events;
ALTER TABLE events_new RENAME TO events;

CREATE TABLE event_ids (
    site_id  TEXT    NOT NULL,
    event_id BLOB    NOT NULL,
    -- The event's row: events (site_id, seq).
    seq      INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE event_ids_recent (
    site_id  TEXT    NOT NULL,
    event_id BLOB    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id)
) STRICT, WITHOUT ROWID;

INSERT INTO event_ids (site_id, event_id, seq)
SELECT site_id, event_id, seq FROM events ORDER BY site_id, event_id;
