-- The phone's clock offset measured at its last successful sync: the server's time in the
-- answer minus the phone's clock when the answer arrived (positive: the phone's clock is slow).
-- The phone corrects its own events' times by it and flags them by the site's skew threshold,
-- as the server does (patrol_core::flags). NULL until the first sync after this version.
ALTER TABLE sync_state ADD COLUMN clock_offset_ms INTEGER;
