-- 0018: the scans a new scan's flags read come from the writer's memory
-- (`store::sqlite::scan_window`), loaded through `event_hours` and the primary key; 0014's two
-- indexes, an entry per scan each at every write, go.
DROP INDEX events_scans_by_guard;
DROP INDEX events_scans_by_checkpoint;
