-- 0007: the folded level of the event-id index kept as runs, one per fold.
--
-- A fold inserted its ids into event_ids by (site_id, event_id); new ids land all over that
-- key range, so each fold rewrote most pages of the table, and its cost grew with the site (at
-- a million events, a fold of 131,072 ids rewrote ~40 MB). Keyed by (site_id, run, event_id),
-- a fold writes its own run at the end of the site's range, in order: its cost is its own size.
-- Run 0 holds the ids of earlier folds merged together (every id of this upgrade); a look-up
-- seeks each run of the site, which the Bloom filter in front makes rare.

CREATE TABLE event_ids_by_run (
    site_id  TEXT    NOT NULL,
    -- 0: merged runs; 1, 2, ...: one per fold since, in fold order.
    run      INTEGER NOT NULL CHECK (run >= 0),
    event_id BLOB    NOT NULL,
    -- The event's row: events (site_id, seq).
    seq      INTEGER NOT NULL,
    PRIMARY KEY (site_id, run, event_id)
) STRICT, WITHOUT ROWID;

INSERT INTO event_ids_by_run (site_id, run, event_id, seq)
SELECT site_id, 0, event_id, seq FROM event_ids ORDER BY site_id, event_id;

DROP TABLE event_ids;
ALTER TABLE event_ids_by_run RENAME TO event_ids;
