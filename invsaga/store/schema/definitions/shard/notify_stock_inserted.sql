-- The insert side of notify_stock_available (see there): new stock rows that have free units.
CREATE OR REPLACE FUNCTION notify_stock_inserted() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    skus text;
BEGIN
    SELECT string_agg(DISTINCT n.sku, ',') INTO skus FROM new_rows n WHERE n.on_hand > n.reserved;
    IF skus IS NOT NULL THEN
        PERFORM pg_notify('stock_available', CASE WHEN length(skus) > 7000 THEN '*' ELSE skus END);
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER stock_available_after_insert
    AFTER INSERT ON stock_levels
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_stock_inserted();
