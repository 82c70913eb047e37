-- An event row may hold its record (the bytes its change puts in the shift log) instead of its
-- change, for a moment: with synchronous=FULL the record is committed while the change is
-- built on another thread, and the next commit writes the change in its place. A change that
-- is missing when the log is loaded (the app was killed in between) is built again from the
-- record: the same record appended to the same log gives the same change.
CREATE TABLE events_v6 (
    seq         INTEGER PRIMARY KEY,
    shift       INTEGER NOT NULL REFERENCES shifts(id),
    event_id    BLOB NOT NULL,
    wall_ms     INTEGER NOT NULL,
    hlc_wall    INTEGER NOT NULL,
    hlc_counter INTEGER NOT NULL,
    record      BLOB,
    change      BLOB,
    CHECK (record IS NOT NULL OR change IS NOT NULL)
) STRICT;
INSERT INTO events_v6 (seq, shift, event_id, wall_ms, hlc_wall, hlc_counter, change)
    SELECT seq, shift, event_id, wall_ms, hlc_wall, hlc_counter, change FROM events;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
