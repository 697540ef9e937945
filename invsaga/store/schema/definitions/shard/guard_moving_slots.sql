-- Every write to a stock row, a hold or the ledger, checked against slot_fences (shard_006.sql) at the
-- end of its statement, in its transaction. The triggers are AFTER triggers on purpose: by then the
-- writing transaction has an xid, so a mover that changes a slot's state and then waits for the
-- transactions in progress (invsaga/store/slot_move.py) has waited for every writer that read the
-- state before the change. Each statement here reads a fresh snapshot (a volatile function under READ
-- COMMITTED), so a writer sees a state change committed while it ran.
-- The refusal check and the queueing below are two statements, so two snapshots: a fence committed
-- between them must not drop this writer's changes from the queue. A writer that passed the check is
-- one the mover waits for under its fence, so its changes are queued under 'fenced' too.
-- With no slot on the move (the usual case) the cost is one probe of an empty table per statement.
CREATE OR REPLACE FUNCTION guard_moving_slots() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    refused record;
BEGIN
    -- The mover's own copy into the target (invsaga.store.slot_move sets this, per transaction).
    IF NOT EXISTS (SELECT 1 FROM slot_fences) OR current_setting('invsaga.slot_mover', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'stock_levels' THEN
        IF EXISTS (SELECT 1 FROM changed c WHERE c.slot IS NULL) AND TG_OP = 'INSERT' THEN
            RAISE EXCEPTION 'a stock row was inserted without its slot'
                USING ERRCODE = 'ISM03', HINT = 'every writer of stock_levels sets slot';
        END IF;
        SELECT f.* INTO refused FROM changed c JOIN slot_fences f ON f.slot = c.slot
         WHERE f.state <> 'copying' LIMIT 1;
    ELSE
        SELECT f.* INTO refused
          FROM changed c JOIN stock_levels s ON s.sku = c.sku AND s.location = c.location
          JOIN slot_fences f ON f.slot = s.slot
         WHERE f.state <> 'copying' LIMIT 1;
    END IF;
    IF refused.slot IS NOT NULL THEN
        IF refused.state = 'moved_out' THEN
            RAISE EXCEPTION 'slot % moved to shard % at map epoch %', refused.slot, refused.moved_to, refused.epoch
                USING ERRCODE = 'ISM02', DETAIL = format('epoch=%s', refused.epoch);
        END IF;
        RAISE EXCEPTION 'slot % is % (move %); retry', refused.slot, refused.state, refused.move_id
            USING ERRCODE = 'ISM01', DETAIL = format('epoch=%s', refused.epoch);
    END IF;
    IF TG_TABLE_NAME = 'stock_levels' THEN
        INSERT INTO slot_move_changes (move_id, kind, sku, location)
        SELECT f.move_id, 'stock', c.sku, c.location
          FROM changed c JOIN slot_fences f ON f.slot = c.slot AND f.state IN ('copying', 'fenced');
    ELSIF TG_TABLE_NAME = 'reservations' THEN
        INSERT INTO slot_move_changes (move_id, kind, sku, location, order_id)
        SELECT f.move_id, 'hold', c.sku, c.location, c.order_id
          FROM changed c JOIN stock_levels s ON s.sku = c.sku AND s.location = c.location
          JOIN slot_fences f ON f.slot = s.slot AND f.state IN ('copying', 'fenced');
    ELSE
        INSERT INTO slot_move_changes (move_id, kind, sku, location, ledger_id)
        SELECT f.move_id, 'ledger', c.sku, c.location, c.id
          FROM changed c JOIN stock_levels s ON s.sku = c.sku AND s.location = c.location
          JOIN slot_fences f ON f.slot = s.slot AND f.state IN ('copying', 'fenced');
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE TRIGGER guard_moving_slots_stock_insert
    AFTER INSERT ON stock_levels REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION guard_moving_slots();
CREATE OR REPLACE TRIGGER guard_moving_slots_stock_update
    AFTER UPDATE ON stock_levels REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION guard_moving_slots();
CREATE OR REPLACE TRIGGER guard_moving_slots_hold_insert
    AFTER INSERT ON reservations REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION guard_moving_slots();
CREATE OR REPLACE TRIGGER guard_moving_slots_hold_update
    AFTER UPDATE ON reservations REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION guard_moving_slots();
CREATE OR REPLACE TRIGGER guard_moving_slots_ledger_insert
    AFTER INSERT ON stock_movements REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION guard_moving_slots();
