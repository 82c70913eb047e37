-- The phone's enrollment: the credential the server issued it (bound on the server to this
-- device id and site; only a store made by enrolling has one, and only such a store can sync),
-- the server that issued it, and when.
ALTER TABLE device ADD COLUMN credential TEXT;
ALTER TABLE device ADD COLUMN server_url TEXT;
ALTER TABLE device ADD COLUMN enrolled_ms INTEGER;

-- The request_seq of the last sync request prepared: each request takes the next, so the server
-- can refuse a replayed one.
ALTER TABLE device ADD COLUMN request_seq INTEGER NOT NULL DEFAULT 0;
