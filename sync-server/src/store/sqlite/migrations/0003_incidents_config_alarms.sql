-- 0003: incidents worked together, versioned site configurations, and the control room's
-- acknowledgements of panic alarms. Every table is keyed by site first.

-- One automerge document per incident (written by guards' phones and operators), stored whole
-- (incidents are small and written rarely), with a projection of its folded state for the
-- control room.
CREATE TABLE incidents (
    site_id     TEXT    NOT NULL REFERENCES sites (site_id),
    incident_id TEXT    NOT NULL,
    -- The document as one automerge save.
    doc         BLOB    NOT NULL,
    -- Its heads: sorted 32-byte change hashes, concatenated.
    heads       BLOB    NOT NULL,
    status      TEXT    NOT NULL,
    round       INTEGER NOT NULL,
    severity    TEXT,
    category    TEXT,
    assignee    TEXT,
    -- Device wall time of the report.
    reported_at INTEGER,
    -- Server time the incident first reached the server (the list's order) and of its last write.
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- The folded state as the control-room API serves it.
    state       TEXT    NOT NULL,
    PRIMARY KEY (site_id, incident_id)
) STRICT;

CREATE INDEX incidents_by_created ON incidents (site_id, created_at, incident_id);
CREATE INDEX incidents_by_status ON incidents (site_id, status, created_at, incident_id);
-- What a sync looks up for the guard on duty: the open incidents assigned to them.
CREATE INDEX incidents_open_by_assignee ON incidents (site_id, assignee)
    WHERE status <> 'closed' AND assignee IS NOT NULL;

-- Devices that wrote to an incident (its reporter included): they get it at every sync while it
-- is open.
CREATE TABLE incident_participants (
    site_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (site_id, device_id, incident_id),
    FOREIGN KEY (site_id, incident_id) REFERENCES incidents (site_id, incident_id)
) STRICT, WITHOUT ROWID;

-- Every version of a site's configuration, 1, 2, 3.. per site; the latest is in force.
CREATE TABLE site_configs (
    site_id    TEXT    NOT NULL REFERENCES sites (site_id),
    version    INTEGER NOT NULL CHECK (version >= 1),
    -- patrol_core::siteconfig::SiteConfig::encode, as sent to devices.
    config     BLOB    NOT NULL,
    -- The same as JSON, as the API serves it.
    json       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (site_id, version)
) STRICT;

-- The control room's acknowledgement of a panic alarm (an event of kind 'panic'); the first
-- one stands.
CREATE TABLE alarm_acks (
    site_id   TEXT    NOT NULL REFERENCES sites (site_id),
    -- The panic event's 16 id bytes.
    event_id  BLOB    NOT NULL CHECK (length(event_id) = 16),
    -- The device that raised it, so that a sync finds its own acknowledgements directly.
    device_id TEXT    NOT NULL,
    acked_by  TEXT    NOT NULL,
    acked_at  INTEGER NOT NULL,
    PRIMARY KEY (site_id, event_id)
) STRICT, WITHOUT ROWID;
