-- 0010: the scans around a new one, for its flags at ingest (`store::flagging`; the PostgreSQL
-- form of SQLite's 0014): a guard's scans by time (padding, impossible speed, out of order) and
-- a checkpoint's scans by time (a tag scanned by two devices, a cloned tag). Both hold scans
-- only, keyed by the corrected time as the feed reads it: the stored one, or for an event
-- stored before corrected times (migration 7), its device time bounded by its receipt. A query
-- uses them when it says `kind = 'checkpoint_scanned'` and this very expression.

CREATE INDEX events_scans_by_guard
    ON events (site_id, guard_id, (COALESCE(corrected_ms, LEAST(device_time_ms, received_at_ms))))
    WHERE kind = 'checkpoint_scanned';
CREATE INDEX events_scans_by_checkpoint
    ON events (site_id, checkpoint_id, (COALESCE(corrected_ms, LEAST(device_time_ms, received_at_ms))))
    WHERE kind = 'checkpoint_scanned';
