-- 0017: webhooks (store::webhooks). Endpoints an administrator registered per site, with the
-- secret that signs their deliveries and their event types as `,a,b,`; the deliveries, an
-- outbox written in the transaction of their cause, one per endpoint and idempotency key; and
-- every attempt at them. Senders of every instance claim deliveries with
-- `FOR UPDATE SKIP LOCKED` and a lease (next_attempt_at moved past it).
CREATE TABLE webhook_endpoints (
    id         bigserial PRIMARY KEY,
    site_id    text   NOT NULL,
    url        text   NOT NULL,
    secret     text   NOT NULL,
    events     text   NOT NULL,
    created_at bigint NOT NULL,
    created_by text   NOT NULL
);

CREATE INDEX webhook_endpoints_by_site ON webhook_endpoints (site_id);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    site_id         text   NOT NULL,
    event_type      text   NOT NULL,
    idempotency_key text   NOT NULL,
    body            text   NOT NULL,
    created_at      bigint NOT NULL,
    state           text   NOT NULL CHECK (state IN ('pending', 'delivered', 'parked')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint,
    delivered_at    bigint,
    UNIQUE (endpoint_id, idempotency_key)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_site ON webhook_deliveries (site_id, id);
-- Delivered deliveries are dropped after a while (webhooks::DELIVERED_KEPT_MS).
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at)
    WHERE state = 'delivered';

CREATE TABLE webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint  NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at          bigint  NOT NULL,
    status      integer,
    error       text,
    duration_ms bigint  NOT NULL
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
