-- Write the stock event outbox (stock_events, see shard_004.sql) for every statement that writes the
-- ledger, in that statement's transaction. Every stock change writes its ledger rows in the statement
-- that changes the stock row (reserve_stock's last INSERT included), so at the end of the statement
-- stock_levels holds the state after it, and the row is locked by this transaction.
-- Per stock row and statement: one stock.changed with the state after it, and a sold_out or
-- back_in_stock when the available units crossed zero (before = after - the statement's deltas).
-- A slot move's copy of ledger rows into its target is history, not a change: it writes no event
-- (invsaga.store.slot_move marks its transactions with invsaga.slot_mover).
CREATE OR REPLACE FUNCTION record_stock_events() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('invsaga.slot_mover', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO stock_events (type, sku, location, on_hand, reserved, available, version, reason, reference)
    SELECT t.type, s.sku, s.location, s.on_hand, s.reserved, s.on_hand - s.reserved, s.version,
           m.reason, m.reference
      FROM (SELECT sku, location,
                   sum(delta_on_hand - delta_reserved) AS delta_available,
                   (array_agg(reason ORDER BY id DESC))[1] AS reason,
                   (array_agg(reference ORDER BY id DESC))[1] AS reference
              FROM moved GROUP BY sku, location) m
      JOIN stock_levels s ON s.sku = m.sku AND s.location = m.location
     CROSS JOIN LATERAL (VALUES
           (1, 'stock.changed'),
           (2, CASE WHEN s.on_hand - s.reserved <= 0 AND s.on_hand - s.reserved - m.delta_available > 0
                    THEN 'stock.sold_out'
                    WHEN s.on_hand - s.reserved > 0 AND s.on_hand - s.reserved - m.delta_available <= 0
                    THEN 'stock.back_in_stock' END)) AS t(rank, type)
     WHERE t.type IS NOT NULL
     ORDER BY s.sku, s.location, t.rank;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER stock_events_after_movements
    AFTER INSERT ON stock_movements
    REFERENCING NEW TABLE AS moved
    FOR EACH STATEMENT EXECUTE FUNCTION record_stock_events();
