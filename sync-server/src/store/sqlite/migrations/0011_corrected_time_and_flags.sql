-- 0011: each event's corrected time and flags, computed when the server receives it
-- (`store::event_json::Stamp`): `corrected_ms` is the device time moved by the clock offset the
-- delivering sync measured, never past `received_at_ms`; `flags` is a JSON array of what about
-- the event deserves a second look (`patrol_core::flags::EventFlag`), NULL when nothing does.
--
-- Events stored before keep both NULL, and the store reads them by one rule (`Stamp::stored`):
-- corrected time = MIN(device_time_ms, received_at_ms), no flags. The offset of the sync that
-- delivered them was never recorded, and `devices.clock_skew_ms` is that of the device's latest
-- sync, which may follow a clock fix: applying it could move right times wrong. Adding the
-- columns this way rewrites no row, however large the table.

ALTER TABLE events ADD COLUMN corrected_ms INTEGER;
ALTER TABLE events ADD COLUMN flags TEXT;
