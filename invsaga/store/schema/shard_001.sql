-- Inventory shard, version 1: stock, holds and the append-only ledger.
--
-- Its functions and triggers (reserve_stock, the stock_available notifications) were created here up
-- to this release; they live in schema/definitions/shard/ now, which migrate applies after the numbered
-- migrations, so on a database that ran the old text they are replaced with the same definitions.

CREATE TABLE shard_identity (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_index integer NOT NULL CHECK (shard_index >= 0)
);

CREATE TABLE stock_levels (
    sku        text        NOT NULL,
    location   text        NOT NULL,
    on_hand    bigint      NOT NULL DEFAULT 0,
    reserved   bigint      NOT NULL DEFAULT 0,
    version    bigint      NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location),
    CONSTRAINT stock_never_oversold CHECK (0 <= reserved AND reserved <= on_hand)
);

CREATE TABLE reservations (
    order_id   text        NOT NULL,
    sku        text        NOT NULL,
    location   text        NOT NULL,
    quantity   integer     NOT NULL CHECK (quantity > 0),
    state      text        NOT NULL CHECK (state IN ('held', 'committed', 'released', 'expired')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The idempotency guard: one hold per order and stock row, ever.
    PRIMARY KEY (order_id, sku, location)
);

-- Only what the hot path must maintain: every index here costs each reservation an insert.
CREATE INDEX reservations_due_for_expiry ON reservations (expires_at) WHERE state = 'held';

CREATE TABLE stock_movements (
    id              bigserial   PRIMARY KEY,
    sku             text        NOT NULL,
    location        text        NOT NULL,
    delta_on_hand   bigint      NOT NULL,
    delta_reserved  bigint      NOT NULL,
    reason          text        NOT NULL
        CHECK (reason IN ('receive', 'adjust', 'import', 'reserve', 'release', 'commit', 'expire')),
    reference       text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
