-- Write the core outbox (order_events, see core_005.sql) when an order reaches a terminal status, in
-- the transaction that moves it there. Statuses only move on, so each order gets at most one.
CREATE OR REPLACE FUNCTION record_order_events() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO order_events (type, order_id, customer_id, amount, currency, reason, lines)
    VALUES ('order.' || NEW.status, NEW.order_id, NEW.customer_id, NEW.amount, NEW.currency, NEW.reason,
            NEW.lines);
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER order_events_after_update
    AFTER UPDATE OF status ON orders
    FOR EACH ROW
    WHEN (NEW.status IN ('confirmed', 'rejected', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_order_events();

CREATE OR REPLACE TRIGGER order_events_after_insert
    AFTER INSERT ON orders
    FOR EACH ROW
    WHEN (NEW.status IN ('confirmed', 'rejected', 'cancelled'))
    EXECUTE FUNCTION record_order_events();
