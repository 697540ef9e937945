-- Core database, version 7: an order refused for want of stock records its short lines with its end.
--
-- A workflow task can be lost after its local activities ran: its worker was killed, or the task timed
-- out on a loaded worker. When that task refused the order, released its stock and recorded the end,
-- Temporal runs it again, and the re-run's reserve finds the order released (the fence rows that stop a
-- late reserve). It ends the order as recorded (invsaga/store/orders.py, workflows/checkout.py): the
-- status and reason were already here, and these are the short lines the buyer's answer lists.
ALTER TABLE orders ADD COLUMN shortages jsonb;
