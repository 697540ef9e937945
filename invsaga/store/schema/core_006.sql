-- Core database, version 6: the shard registry, the slot map's epoch and slot moves (issue 13).
--
-- The registry is where every process learns its shards, in place of a list fixed at deploy time.
-- `dsn` is a DSN or a reference to one in the process' environment (`env:NAME`, or
-- `env:INVSAGA_SHARD_DSNS[i]` for the i-th entry of the list), so a secret need not be stored here.
-- A deployment that never registers a shard keeps working from INVSAGA_SHARD_DSNS: `invsaga db migrate`
-- registers that list, in its order, as references to it.
CREATE TABLE shards (
    shard_index integer     PRIMARY KEY CHECK (shard_index >= 0),
    dsn         text        NOT NULL CHECK (dsn <> ''),
    state       text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'removed')),
    added_at    timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Bumped, with a NOTIFY on channel invsaga_routing, in every transaction that changes the slot map or
-- the registry. A shard that refuses a write for a slot that moved names the epoch of that move; a
-- process whose map is older reloads it (invsaga/store/routing_watch.py).
CREATE TABLE routing_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     bigint  NOT NULL DEFAULT 0
);
INSERT INTO routing_epoch DEFAULT VALUES;

-- One row per slot move (invsaga/store/slot_move.py): its slots go from `source` to `target` through
-- the phases in order; `phase` is where a resumed mover starts again.
CREATE TABLE slot_moves (
    move_id     bigserial   PRIMARY KEY,
    slots       integer[]   NOT NULL CHECK (cardinality(slots) > 0),
    source      integer     NOT NULL,
    target      integer     NOT NULL CHECK (target <> source),
    phase       text        NOT NULL DEFAULT 'planned'
        CHECK (phase IN ('planned', 'copying', 'catching_up', 'fenced', 'flipped', 'done', 'aborted')),
    skus_copied bigint      NOT NULL DEFAULT 0,
    fence_ms    double precision,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A slot is in at most one unfinished move.
CREATE INDEX slot_moves_open ON slot_moves (move_id) WHERE phase NOT IN ('done', 'aborted');
