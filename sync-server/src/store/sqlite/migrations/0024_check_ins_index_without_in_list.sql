-- 0024: the index of timer events (migration 19) tests a new event's kind with comparisons, not
-- an IN list. SQLite evaluates a partial index's `kind IN (a, b, c)` on every insert into
-- events by building a temporary b-tree of the list (lists of more than two), so every event
-- stored paid for one: a third of W1's writer thread under callgrind (issue 18, point 9;
-- docs/benchmarks.md). The same rows are indexed; queries name the same OR of comparisons.
DROP INDEX events_check_ins;
CREATE INDEX events_check_ins ON events (site_id, shift_id, device_seq)
    WHERE kind = 'checkin_timer_started' OR kind = 'checked_in' OR kind = 'checkin_timer_stopped';
