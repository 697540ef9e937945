-- Inventory shard, version 4: the stock event outbox (issue 12, stock events).
--
-- Every statement that writes stock_movements also writes, through the trigger record_stock_events
-- (schema/definitions/shard/record_stock_events.sql), one stock.changed row per stock row it moved,
-- plus stock.sold_out or stock.back_in_stock when the available units crossed zero: the same
-- transaction as the change, so an event exists exactly when its change committed.
--
-- `id` is taken in insert order, which is not commit order across transactions, so a reader "after id
-- N" could miss a row that commits later with a smaller id. The relay, one per shard, stamps `seq` on
-- committed rows in id order (invsaga/events/relay.py); readers and deliveries go by seq, which only
-- grows past what anyone has seen. Per stock row, id order is commit order already: every change locks
-- its stock row before the trigger inserts its event.
CREATE TABLE stock_events (
    id         bigserial   PRIMARY KEY,
    seq        bigint      UNIQUE,
    type       text        NOT NULL CHECK (type IN ('stock.changed', 'stock.sold_out', 'stock.back_in_stock')),
    sku        text        NOT NULL,
    location   text        NOT NULL,
    on_hand    bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    available  bigint      NOT NULL,
    version    bigint      NOT NULL,
    reason     text        NOT NULL,
    reference  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The relay's work list: only rows not yet stamped, so it stays tiny however long the table grows.
CREATE INDEX stock_events_unstamped ON stock_events (id) WHERE seq IS NULL;

-- The last seq handed out, in one row: its row lock orders stampers even without the relay's lock.
CREATE TABLE stock_event_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq  bigint  NOT NULL DEFAULT 0
);
INSERT INTO stock_event_counter DEFAULT VALUES;
