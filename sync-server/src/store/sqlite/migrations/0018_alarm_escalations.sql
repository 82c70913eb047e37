-- 0018: panic alarms escalated (nobody acknowledged them within the site's time), and the
-- alarm changes live streams announce (acknowledged, escalated), in the order they happened,
-- for every instance to read after its own cursor.
CREATE TABLE alarm_escalations (
    site_id      TEXT    NOT NULL,
    event_id     BLOB    NOT NULL CHECK (length(event_id) = 16),
    escalated_at INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id)
) STRICT, WITHOUT ROWID;

-- AUTOINCREMENT: an id is never used twice, so a reader's cursor never skips a change.
CREATE TABLE alarm_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id  TEXT    NOT NULL,
    event_id BLOB    NOT NULL CHECK (length(event_id) = 16),
    kind     TEXT    NOT NULL CHECK (kind IN ('acknowledged', 'escalated')),
    at       INTEGER NOT NULL
) STRICT;
