-- 0020: webhooks (store::webhooks). Endpoints an administrator registered per site, with the
-- secret that signs their deliveries and their event types as `,a,b,`; the deliveries, an
-- outbox written in the transaction of their cause, one per endpoint and idempotency key; and
-- every attempt at them.
CREATE TABLE webhook_endpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id    TEXT    NOT NULL,
    url        TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    events     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL
) STRICT;

-- A cause looks up its site's endpoints by this, in its own transaction.
CREATE INDEX webhook_endpoints_by_site ON webhook_endpoints (site_id);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     INTEGER NOT NULL,
    site_id         TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'parked')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is due (a claim moves it to the end of its lease).
    next_attempt_at INTEGER,
    delivered_at    INTEGER,
    UNIQUE (endpoint_id, idempotency_key)
) STRICT;

-- The senders' claim reads only the pending deliveries, the earliest due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_site ON webhook_deliveries (site_id, id);
-- Delivered deliveries are dropped after a while (webhooks::DELIVERED_KEPT_MS).
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at)
    WHERE state = 'delivered';

CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
