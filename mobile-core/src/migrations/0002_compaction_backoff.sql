-- A finished shift's log compacted into one saved document; its events' change bytes are then
-- emptied (the snapshot holds them).
ALTER TABLE shifts ADD COLUMN snapshot BLOB;

-- Retry state of the sync outbox: consecutive failures and when to try next.
ALTER TABLE sync_state ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN next_attempt_ms INTEGER;

-- Sequence number of the latest panic alarm: while it is undelivered, sync is urgent.
ALTER TABLE sync_state ADD COLUMN urgent_seq INTEGER;
