-- 0012: what the shift listing shows of each shift log, kept on its `docs` row as logs arrive,
-- so that listing a site's shifts reads one row per shift and never the shifts' events.
-- started_at / ended_at: the device time of the log's shift_started / shift_ended event (NULL
-- until it arrives); event_count: the events of the log in the feed; last_event_at: when the
-- last of them was received. Logs stored before this migration get them from their events.

ALTER TABLE docs ADD COLUMN started_at INTEGER;
ALTER TABLE docs ADD COLUMN ended_at INTEGER;
ALTER TABLE docs ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE docs ADD COLUMN last_event_at INTEGER;

-- One pass over the events, not one per log.
CREATE TEMP TABLE shift_totals AS
SELECT site_id, shift_id,
       MIN(CASE WHEN kind = 'shift_started' THEN device_time_ms END) AS started_at,
       MIN(CASE WHEN kind = 'shift_ended' THEN device_time_ms END) AS ended_at,
       COUNT(*) AS event_count,
       MAX(received_at_ms) AS last_event_at
FROM events GROUP BY site_id, shift_id;

UPDATE docs SET started_at = t.started_at, ended_at = t.ended_at,
                event_count = t.event_count, last_event_at = t.last_event_at
FROM shift_totals t
WHERE t.site_id = docs.site_id AND t.shift_id = docs.doc_id AND docs.kind = 'shift_log';

DROP TABLE shift_totals;

-- The listing's filters: a guard's shifts, the shifts still open, shifts by start. (A device's
-- shifts: docs_by_device.) Each changes at most once in a log's life.
CREATE INDEX docs_by_guard ON docs (site_id, guard_id, doc_id);
CREATE INDEX docs_open ON docs (site_id, doc_id) WHERE ended_at IS NULL;
CREATE INDEX docs_by_start ON docs (site_id, started_at);
