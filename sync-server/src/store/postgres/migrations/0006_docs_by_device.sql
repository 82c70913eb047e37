-- 0006: each device's shift logs, in shift-id order (the PostgreSQL form of SQLite's 0010), so
-- that the device list finds the guard of a device's most recent shift
-- (`store::LATEST_SHIFT_GUARD`) without reading the site's other logs. None of its columns
-- changes when a log grows, so a sync's update of a `docs` row stays a heap-only update; only a
-- new shift adds an entry.

CREATE INDEX docs_by_device ON docs (site_id, device_id, doc_id);
