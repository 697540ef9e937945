-- Whether this shard serves the stock row (sku, location): false while its slot's rows here are a copy
-- arriving ('importing') or what a move left behind ('moved_out', until the mover deletes them). The
-- SQL side of invsaga/store/slot_ownership.py, for reserve_stock: an order's rows of such a slot are
-- not the order's rows here, so they neither make a reserve a replay nor are answered as its split.
CREATE OR REPLACE FUNCTION slot_served_here(p_sku text, p_location text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT NOT EXISTS (
        SELECT 1 FROM stock_levels o JOIN slot_fences f ON f.slot = o.slot
         WHERE o.sku = p_sku AND o.location = p_location AND f.state IN ('importing', 'moved_out'))
$fn$;
