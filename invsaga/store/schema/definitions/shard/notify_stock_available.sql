-- Tell listeners (the sold-out hint in API and client processes) when stock becomes available again:
-- a release, expiry, receipt, adjustment or import. Reservations never fire it, so the hot path pays
-- nothing. One notification per statement: the SKUs, or '*' when too many changed to list.
CREATE OR REPLACE FUNCTION notify_stock_available() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    skus text;
BEGIN
    SELECT string_agg(DISTINCT n.sku, ',') INTO skus
      FROM new_rows n
      LEFT JOIN old_rows o ON o.sku = n.sku AND o.location = n.location
     WHERE o.sku IS NULL OR n.on_hand - n.reserved > o.on_hand - o.reserved;
    IF skus IS NOT NULL THEN
        PERFORM pg_notify('stock_available', CASE WHEN length(skus) > 7000 THEN '*' ELSE skus END);
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER stock_available_after_update
    AFTER UPDATE ON stock_levels
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_stock_available();
