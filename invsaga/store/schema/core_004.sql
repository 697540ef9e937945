-- Core database, version 4: indexes for listing orders, newest first (issue 12, orders).
--
-- Each list query (invsaga/store/order_list.py) filters by equality on a leading column, or by a
-- created_at range, and orders by (created_at DESC, order_id DESC), the trailing columns here; its
-- keyset cursor is a bound on that pair. So every page, however deep, is one index range scan that
-- stops after the page, at millions of orders. IF NOT EXISTS: on a large live table an operator may
-- build them first with CREATE INDEX CONCURRENTLY (docs/operations.md, 7.4), and migrate finds them.
CREATE INDEX IF NOT EXISTS orders_by_customer_newest ON orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_by_status_newest ON orders (status, created_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_newest ON orders (created_at DESC, order_id DESC);

-- Its columns lead orders_by_customer_newest, which serves every query it did. orders_by_status stays:
-- it holds only the open orders, the small set a scan of everything still in flight wants.
DROP INDEX IF EXISTS orders_by_customer;
