-- Inventory shard, version 6: slots that move between shards while checkouts run (issue 13).
--
-- A SKU's slot is blake2b(sku) mod 4096 (invsaga/store/routing.py), which SQL cannot compute, so every
-- stock row carries it: the writer sets it on insert, and `invsaga db migrate` fills it on rows written
-- before this version (invsaga/store/slot_backfill.py). A slot move selects a slot's rows by it.
ALTER TABLE stock_levels ADD COLUMN slot integer CHECK (slot >= 0);
CREATE INDEX stock_levels_by_slot ON stock_levels (slot);

-- The slots this shard does not serve as usual, one row each (invsaga/store/slot_move.py):
--   copying   this shard owns the slot and writes go on; each change is also queued in
--             slot_move_changes, for the mover's catch-up;
--   fenced    this shard owns the slot, but the mover is applying its last changes: writes are refused
--             (retry), for the final catch-up only;
--   importing the slot's rows are being copied here; it is not this shard's yet: writes are refused;
--   moved_out the slot is shard `moved_to`'s since map epoch `epoch`: writes are refused, so a process
--             whose slot map is older reloads it and goes there instead (a stale map never writes).
-- A slot absent from this table is served as usual. guard_moving_slots (definitions/shard/) enforces it.
CREATE TABLE slot_fences (
    slot     integer PRIMARY KEY CHECK (slot >= 0),
    state    text    NOT NULL CHECK (state IN ('copying', 'fenced', 'importing', 'moved_out')),
    move_id  bigint  NOT NULL,
    moved_to integer CHECK ((state = 'moved_out') = (moved_to IS NOT NULL)),
    epoch    bigint  NOT NULL DEFAULT 0
);

-- What changed in a copying slot since its rows were copied: the keys to copy again. A queue, not a
-- cursor: the mover deletes the rows it applied, so a writer that commits late is never skipped.
CREATE TABLE slot_move_changes (
    id        bigserial PRIMARY KEY,
    move_id   bigint    NOT NULL,
    kind      text      NOT NULL CHECK (kind IN ('stock', 'hold', 'ledger')),
    sku       text      NOT NULL,
    location  text      NOT NULL,
    order_id  text,
    ledger_id bigint
);
CREATE INDEX slot_move_changes_by_move ON slot_move_changes (move_id, id);
