-- 0014: a site's panic alarms, the latest first, for the control room's alarms view
-- (`Store::panic_alarms`) without reading the site's other events. (SQLite's migration 0006
-- made the same kind of index.)
CREATE INDEX events_panics ON events (site_id, seq) WHERE kind = 'panic';
