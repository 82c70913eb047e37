-- 0015: panic alarms escalated (nobody acknowledged them within the site's time), and the
-- alarm changes live streams announce (acknowledged, escalated), in the order they happened,
-- for every instance to read after its own cursor. Changes are written under one advisory
-- lock, so their ids commit in order and a reader's cursor never passes one still to commit.
CREATE TABLE alarm_escalations (
    site_id      text   NOT NULL,
    event_id     bytea  NOT NULL CHECK (length(event_id) = 16),
    escalated_at bigint NOT NULL,
    PRIMARY KEY (site_id, event_id)
);

CREATE TABLE alarm_changes (
    id       bigserial PRIMARY KEY,
    site_id  text   NOT NULL,
    event_id bytea  NOT NULL CHECK (length(event_id) = 16),
    kind     text   NOT NULL CHECK (kind IN ('acknowledged', 'escalated')),
    at       bigint NOT NULL
);
