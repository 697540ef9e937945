-- Core database, version 1: the slot map, the product catalog and orders.

CREATE TABLE slot_map (
    slot        integer PRIMARY KEY CHECK (slot >= 0),
    shard_index integer NOT NULL CHECK (shard_index >= 0)
);

CREATE TABLE products (
    sku        text          PRIMARY KEY,
    name       text          NOT NULL,
    price      numeric(12,2) NOT NULL CHECK (price >= 0),
    currency   text          NOT NULL DEFAULT 'USD',
    active     boolean       NOT NULL DEFAULT true,
    updated_at timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    order_id    text          PRIMARY KEY,
    customer_id text          NOT NULL,
    status      text          NOT NULL
        CHECK (status IN ('pending', 'reserved', 'paid', 'confirmed', 'rejected', 'cancelled')),
    amount      numeric(12,2) NOT NULL CHECK (amount >= 0),
    currency    text          NOT NULL,
    lines       jsonb         NOT NULL,
    reason      text,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now()
);

CREATE INDEX orders_by_customer ON orders (customer_id, created_at);
CREATE INDEX orders_by_status ON orders (status) WHERE status NOT IN ('confirmed', 'rejected', 'cancelled');
