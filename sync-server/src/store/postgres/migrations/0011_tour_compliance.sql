-- 0011: tour compliance on the server (issue 18; `store::compliance`), the PostgreSQL form of
-- SQLite's 0015. Each tour window's checkpoints, computed as scans arrive and kept, provisional
-- until final; amendments of final windows; and what is needed to compute them incrementally
-- without re-reading the night.

-- Per site: windows starting before `tracked_since` are not kept (NULL: all are). Sites that
-- exist now get the time of this migration: their earlier scans were never recorded for tours.
-- `closed_through`: the finaliser has closed every window whose grace ended by then (NULL
-- before its first pass over the site).
CREATE TABLE compliance_sites (
    site_id        text   NOT NULL PRIMARY KEY REFERENCES sites (site_id),
    tracked_since  bigint,
    closed_through bigint
);
INSERT INTO compliance_sites (site_id, tracked_since, closed_through)
-- Floored as the server's own clock reads milliseconds (a cast would round up).
SELECT site_id, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint, NULL FROM sites;

-- The scans of checkpoints a tour holds, as compliance reads them: by checkpoint and corrected
-- time (the order in which windows take them).
CREATE TABLE tour_scans (
    site_id       text   NOT NULL,
    checkpoint_id text   NOT NULL,
    corrected_ms  bigint NOT NULL,
    event_id      bytea  NOT NULL CHECK (length(event_id) = 16),
    device_id     text   NOT NULL,
    guard_id      text   NOT NULL,
    PRIMARY KEY (site_id, checkpoint_id, corrected_ms, event_id)
);

-- Per shift log, kept as it arrives: the corrected times of its start, its end (NULL until
-- delivered) and its latest delivered event. A window is final once every log on shift during
-- it is delivered past its grace.
CREATE TABLE shift_deliveries (
    site_id      text   NOT NULL,
    doc_id       text   NOT NULL,
    started_ms   bigint NOT NULL,
    ended_ms     bigint,
    delivered_to bigint NOT NULL,
    PRIMARY KEY (site_id, doc_id)
);
CREATE INDEX shift_deliveries_open ON shift_deliveries (site_id) WHERE ended_ms IS NULL;
CREATE INDEX shift_deliveries_by_end ON shift_deliveries (site_id, ended_ms);

-- Each tour window computed: `checkpoints` is a JSON array of each checkpoint's mark (pending,
-- done, done_late, missed) and the scan it took (`store::compliance::CheckpointRow`);
-- `final_at`/`final_by` (delivery or deadline) once final; `closes_at` = end + grace.
CREATE TABLE tour_windows (
    site_id     text   NOT NULL,
    tour_id     text   NOT NULL,
    start_ms    bigint NOT NULL,
    end_ms      bigint NOT NULL,
    grace_ms    bigint NOT NULL,
    closes_at   bigint NOT NULL,
    checkpoints text   NOT NULL,
    final_at    bigint,
    final_by    text CHECK (final_by IN ('delivery', 'deadline')),
    amendments  bigint NOT NULL DEFAULT 0,
    updated_at  bigint NOT NULL,
    CHECK ((final_at IS NULL) = (final_by IS NULL)),
    PRIMARY KEY (site_id, tour_id, start_ms, end_ms)
);
-- A site's windows by start (the API's spans); the provisional ones by the end of their grace
-- (the finaliser).
CREATE INDEX tour_windows_by_start ON tour_windows (site_id, start_ms);
CREATE INDEX tour_windows_provisional ON tour_windows (site_id, closes_at) WHERE final_at IS NULL;

-- Changes to final windows: per window 1, 2, ...; `before`/`after` are the checkpoint's rows
-- (JSON) either side, `event_id` the scan that caused it, `at_ms` when.
CREATE TABLE tour_amendments (
    site_id       text   NOT NULL,
    tour_id       text   NOT NULL,
    start_ms      bigint NOT NULL,
    end_ms        bigint NOT NULL,
    n             bigint NOT NULL,
    checkpoint_id text   NOT NULL,
    before        text   NOT NULL,
    after         text   NOT NULL,
    event_id      bytea  NOT NULL CHECK (length(event_id) = 16),
    at_ms         bigint NOT NULL,
    PRIMARY KEY (site_id, tour_id, start_ms, end_ms, n)
);

-- The window changes each instance announces on its live streams (window_changed,
-- window_final, window_amended), numbered per site; kept a week.
CREATE TABLE tour_window_changes (
    site_id text   NOT NULL,
    seq     bigint NOT NULL,
    kind    text   NOT NULL,
    data    text   NOT NULL,
    at_ms   bigint NOT NULL,
    PRIMARY KEY (site_id, seq)
);
