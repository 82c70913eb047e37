-- 0019: lone-worker check-in timers. The timer events of a shift, found without reading its
-- other events; and each check-in the server found overdue (no check-in reached it by the
-- deadline and its grace), recorded once per shift and deadline.
CREATE INDEX events_check_ins ON events (site_id, shift_id, device_seq)
    WHERE kind IN ('checkin_timer_started', 'checked_in', 'checkin_timer_stopped');

CREATE TABLE check_ins_overdue (
    site_id     TEXT    NOT NULL,
    shift_id    TEXT    NOT NULL,
    due_ms      INTEGER NOT NULL,
    device_id   TEXT    NOT NULL,
    guard_id    TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (site_id, shift_id, due_ms)
) STRICT, WITHOUT ROWID;
