-- Core database, version 5: webhooks and the core event outbox (issue 12, stock events).
--
-- order_events is the core database's outbox, written by the trigger record_order_events
-- (schema/definitions/core/record_order_events.sql) in the transaction that moves an order to a
-- terminal status. Like stock_events on the shards it is stamped with a seq by the one active relay.
CREATE TABLE order_events (
    id          bigserial     PRIMARY KEY,
    seq         bigint        UNIQUE,
    type        text          NOT NULL CHECK (type IN ('order.confirmed', 'order.rejected', 'order.cancelled')),
    order_id    text          NOT NULL,
    customer_id text          NOT NULL,
    amount      numeric(12,2) NOT NULL,
    currency    text          NOT NULL,
    reason      text,
    lines       jsonb         NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX order_events_unstamped ON order_events (id) WHERE seq IS NULL;

CREATE TABLE order_event_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq  bigint  NOT NULL DEFAULT 0
);
INSERT INTO order_event_counter DEFAULT VALUES;

-- A registered receiver. The secret signs every delivery (HMAC-SHA256); it is shown once, at creation.
CREATE TABLE webhooks (
    id          text        PRIMARY KEY,
    url         text        NOT NULL,
    event_types text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    secret      text        NOT NULL,
    active      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Per webhook and event source ('core', 'shard-0', ...): the last seq delivered (a 2xx), and the
-- retry state of the event after it. A webhook passes an event only once it is delivered, so its
-- deliveries from one source go out in seq order.
CREATE TABLE webhook_cursors (
    webhook_id      text        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    source          text        NOT NULL,
    delivered_seq   bigint      NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, source)
);
