-- 0012: events by corrected time, for the daily activity report (the PostgreSQL form of
-- SQLite's 0016): `Store::events_between` reads one local day of a site's events in
-- corrected-time order, in bounded pages, without walking the site's older history. The key is
-- the corrected time as the store reads it (`Stamp::stored`): `corrected_ms`, or for an event
-- stored before migration 7, its device time bounded by its receipt; the query writes the same
-- expression. `seq` orders events of the same millisecond and resumes a page.
--
-- Numbered after the flags' (0010) and the tour compliance's (0011) migrations of issue 18.
CREATE INDEX events_by_corrected ON events (
    site_id, (COALESCE(corrected_ms, LEAST(device_time_ms, received_at_ms))), seq
);
