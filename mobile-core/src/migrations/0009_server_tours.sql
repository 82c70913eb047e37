-- The server's tour status from the phone's last sync (patrol_core::protocol::TourStatus: a
-- version byte 1, then postcard): the scans its compliance counted, from every device, up to
-- and including what that sync delivered. The phone's tour view adds its own scans delivered
-- since. NULL when the last answer carried none (an older server, or no shift open).
ALTER TABLE sync_state ADD COLUMN server_tours BLOB;
