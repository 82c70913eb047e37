-- 0023: the scans around a new one (`store::flagging`) without an index entry per scan where a
-- coarser one does (issue 18, point 9: W1 paid about a fifth more for the two indexes of
-- migration 14, each an insert at a random place of a b-tree per scan).
--
-- A guard's scans by time: `scan_hours`, one row per log write, guard and hour (UTC) its new
-- scans' corrected times fall in, with the first and last seq of those scans, as `event_hours`
-- (migration 17) does for every event. The flags read the guard's hours and then those seq
-- ranges of the events table by its primary key, keeping the guard's scans in the span.
--
-- A checkpoint's scans by time, for the cloned tag: only scans of a tag (NFC or QR) can be one,
-- so the index holds only those. `tagged` is 1 for a scan of a tag, 0 for a GPS or manual scan,
-- NULL for other events and for scans stored before this migration (not known without reading
-- their record, so they stay in the index).
--
-- Existing scans get rows of their hours, at most 4,096 seqs apart.
CREATE TABLE scan_hours (
    site_id   TEXT    NOT NULL,
    guard_id  TEXT    NOT NULL,
    hour_ms   INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (site_id, guard_id, hour_ms, first_seq)
) STRICT, WITHOUT ROWID;

INSERT INTO scan_hours (site_id, guard_id, hour_ms, first_seq, last_seq)
SELECT site_id, guard_id, hour_ms, MIN(seq), MAX(seq)
FROM (
    -- The hour's start, rounded down (also before 1970, as `event_hours::hour_of` does).
    SELECT site_id, guard_id, seq, t - (((t % 3600000) + 3600000) % 3600000) AS hour_ms
    FROM (
        SELECT site_id, guard_id, seq,
               COALESCE(corrected_ms, MIN(device_time_ms, received_at_ms)) AS t
        FROM events WHERE kind = 'checkpoint_scanned'
    )
)
GROUP BY site_id, guard_id, hour_ms, seq / 4096;

DROP INDEX events_scans_by_guard;

ALTER TABLE events ADD COLUMN tagged INTEGER CHECK (tagged IN (0, 1));

DROP INDEX events_scans_by_checkpoint;
CREATE INDEX events_tag_scans_by_checkpoint
    ON events (site_id, checkpoint_id, COALESCE(corrected_ms, MIN(device_time_ms, received_at_ms)))
    WHERE kind = 'checkpoint_scanned' AND tagged IS NOT 0;
