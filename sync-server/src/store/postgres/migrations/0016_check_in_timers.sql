-- 0016: lone-worker check-in timers. The timer events of a shift, found without reading its
-- other events; and each check-in the server found overdue (no check-in reached it by the
-- deadline and its grace), recorded once per shift and deadline.
CREATE INDEX events_check_ins ON events (site_id, shift_id, device_seq)
    WHERE kind IN ('checkin_timer_started', 'checked_in', 'checkin_timer_stopped');

CREATE TABLE check_ins_overdue (
    site_id     text   NOT NULL,
    shift_id    text   NOT NULL,
    due_ms      bigint NOT NULL,
    device_id   text   NOT NULL,
    guard_id    text   NOT NULL,
    recorded_at bigint NOT NULL,
    PRIMARY KEY (site_id, shift_id, due_ms)
);
