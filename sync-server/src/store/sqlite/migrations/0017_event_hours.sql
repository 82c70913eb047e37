-- 0017: a site's events by the hour of their corrected time, coarsely (`store::event_hours`):
-- each log write adds one row per hour its new events fall in, with the first and last seq of
-- those events. The daily activity report reads a day's events through the rows of its hours
-- and the table's primary key, where 0016's index took an entry per event at a random place at
-- every write.
--
-- Existing events get rows of their hours, at most 4,096 seqs apart, and 0016's index goes.
CREATE TABLE event_hours (
    site_id   TEXT    NOT NULL,
    hour_ms   INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (site_id, hour_ms, first_seq)
) STRICT, WITHOUT ROWID;

INSERT INTO event_hours (site_id, hour_ms, first_seq, last_seq)
SELECT site_id, hour_ms, MIN(seq), MAX(seq)
FROM (
    -- The hour's start, rounded down (also before 1970, as `event_hours::hour_of` does).
    SELECT site_id, seq, t - (((t % 3600000) + 3600000) % 3600000) AS hour_ms
    FROM (
        SELECT site_id, seq, COALESCE(corrected_ms, MIN(device_time_ms, received_at_ms)) AS t
        FROM events
    )
)
GROUP BY site_id, hour_ms, seq / 4096;

DROP INDEX events_by_corrected;
