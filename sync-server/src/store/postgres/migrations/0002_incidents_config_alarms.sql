-- 0002: incidents worked together, versioned site configurations, and the control room's
-- acknowledgements of panic alarms (the PostgreSQL form of SQLite's 0003). Every table is keyed
-- by site first.

-- One automerge document per incident (written by guards' phones and operators), stored whole
-- (incidents are small and written rarely), with a projection of its folded state for the
-- control room. Every write locks the row (SELECT .. FOR UPDATE) for its read-modify-write.
CREATE TABLE incidents (
    site_id     text   NOT NULL REFERENCES sites (site_id),
    incident_id text   NOT NULL,
    -- The document as one automerge save.
    doc         bytea  NOT NULL,
    -- Its heads: sorted 32-byte change hashes, concatenated.
    heads       bytea  NOT NULL,
    status      text   NOT NULL,
    round       bigint NOT NULL,
    severity    text,
    category    text,
    assignee    text,
    -- Device wall time of the report.
    reported_at bigint,
    -- Server time the incident first reached the server (the list's order) and of its last write.
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    -- The folded state as the control-room API serves it.
    state       text   NOT NULL,
    PRIMARY KEY (site_id, incident_id)
);

CREATE INDEX incidents_by_created ON incidents (site_id, created_at, incident_id);
CREATE INDEX incidents_by_status ON incidents (site_id, status, created_at, incident_id);
-- What a sync looks up for the guard on duty: the open incidents assigned to them.
CREATE INDEX incidents_open_by_assignee ON incidents (site_id, assignee)
    WHERE status <> 'closed' AND assignee IS NOT NULL;

-- Devices that wrote to an incident (its reporter included): they get it at every sync while it
-- is open.
CREATE TABLE incident_participants (
    site_id     text NOT NULL,
    device_id   text NOT NULL,
    incident_id text NOT NULL,
    PRIMARY KEY (site_id, device_id, incident_id),
    FOREIGN KEY (site_id, incident_id) REFERENCES incidents (site_id, incident_id)
);

-- Every version of a site's configuration, 1, 2, 3.. per site; the latest is in force.
CREATE TABLE site_configs (
    site_id    text   NOT NULL REFERENCES sites (site_id),
    version    bigint NOT NULL CHECK (version >= 1),
    -- patrol_core::siteconfig::SiteConfig::encode, as sent to devices.
    config     bytea  NOT NULL,
    -- The same as JSON, as the API serves it.
    json       text   NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (site_id, version)
);

-- The control room's acknowledgement of a panic alarm (an event of kind 'panic'); the first
-- one stands.
CREATE TABLE alarm_acks (
    site_id   text   NOT NULL REFERENCES sites (site_id),
    -- The panic event's 16 id bytes.
    event_id  bytea  NOT NULL CHECK (length(event_id) = 16),
    -- The device that raised it, so that a sync finds its own acknowledgements directly.
    device_id text   NOT NULL,
    acked_by  text   NOT NULL,
    acked_at  bigint NOT NULL,
    PRIMARY KEY (site_id, event_id)
);
