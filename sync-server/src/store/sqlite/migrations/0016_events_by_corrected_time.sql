-- 0016: events by corrected time, for the daily activity report (`report`), which reads one
-- local day of a site's events in corrected-time order, in bounded pages
-- (`Store::events_between`), without walking the site's older history.
--
-- The key is the corrected time as the store reads it (`Stamp::stored`): `corrected_ms`, or for
-- an event stored before migration 11, its device time bounded by its receipt. The query writes
-- the same expression, so SQLite uses this index for it. The table's primary key (site_id, seq)
-- follows in the index, which orders events of the same millisecond and resumes a page.
--
-- Numbered after the flags' (0014) and the tour compliance's (0015) migrations of issue 18.
CREATE INDEX events_by_corrected ON events (
    site_id, COALESCE(corrected_ms, MIN(device_time_ms, received_at_ms)), seq
);
