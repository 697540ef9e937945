-- Inventory shard, version 1: stock, holds and the append-only ledger.

CREATE TABLE shard_identity (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_index integer NOT NULL CHECK (shard_index >= 0)
);

CREATE TABLE stock_levels (
    sku        text        NOT NULL,
    location   text        NOT NULL,
    on_hand    bigint      NOT NULL DEFAULT 0,
    reserved   bigint      NOT NULL DEFAULT 0,
    version    bigint      NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location),
    CONSTRAINT stock_never_oversold CHECK (0 <= reserved AND reserved <= on_hand)
);

CREATE TABLE reservations (
    id         bigserial   PRIMARY KEY,
    order_id   text        NOT NULL,
    sku        text        NOT NULL,
    location   text        NOT NULL,
    quantity   integer     NOT NULL CHECK (quantity > 0),
    state      text        NOT NULL CHECK (state IN ('held', 'committed', 'released', 'expired')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The idempotency guard: one hold per order and stock row, ever.
    CONSTRAINT reservations_one_per_order_line UNIQUE (order_id, sku, location)
);

CREATE INDEX reservations_due_for_expiry ON reservations (expires_at) WHERE state = 'held';
CREATE INDEX reservations_by_stock_row ON reservations (sku, location) WHERE state = 'held';

CREATE TABLE stock_movements (
    id              bigserial   PRIMARY KEY,
    sku             text        NOT NULL,
    location        text        NOT NULL,
    delta_on_hand   bigint      NOT NULL,
    delta_reserved  bigint      NOT NULL,
    reason          text        NOT NULL
        CHECK (reason IN ('receive', 'adjust', 'import', 'reserve', 'release', 'commit', 'expire')),
    reference       text        NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX stock_movements_by_stock_row ON stock_movements (sku, location);

-- Reserve a batch of requests in arrival order, in one statement and one transaction.
--
-- Each request is all-or-nothing over its lines. Requests are served first come, first served. An
-- order that already has rows on this shard is answered with its recorded state and changes nothing
-- (the unique key above is the backstop). Stock rows are locked in key order before anything else,
-- so concurrent batches cannot deadlock, and a duplicate of an in-flight order waits for it to commit.
-- The allocation runs in memory; the writes are three set-based statements for the whole batch.
CREATE FUNCTION reserve_stock(
    p_order_ids   text[],    -- one per request, in arrival order
    p_ttl_seconds integer[], -- one per request
    p_line_req    integer[], -- one per line: 1-based request index, lines grouped by request
    p_skus        text[],
    p_locations   text[],
    p_quantities  integer[]
) RETURNS TABLE (
    o_req       integer,
    o_sku       text,
    o_location  text,
    o_requested integer,
    o_available bigint,   -- after this request if held; at its turn if short; NULL if no such row
    o_state     text,     -- held | short | committed | released | expired
    o_replayed  boolean
) LANGUAGE plpgsql AS $fn$
DECLARE
    n_lines     integer := coalesce(cardinality(p_skus), 0);
    keys        text[]   := '{}';
    free        bigint[] := '{}';
    seen_orders text[]   := '{}';
    seen_states text[]   := '{}';
    g_order     text[]   := '{}';
    g_sku       text[]   := '{}';
    g_loc       text[]   := '{}';
    g_qty       integer[] := '{}';
    g_expires   timestamptz[] := '{}';
    row_        record;
    i           integer;
    l           integer;
    j           integer := 1;
    first_line  integer;
    pos         integer;
    fits        boolean;
    prior       text;
BEGIN
    FOR row_ IN
        SELECT s.sku, s.location, s.on_hand - s.reserved AS free_now
          FROM stock_levels s
         WHERE (s.sku, s.location) IN (SELECT u.s, u.l FROM unnest(p_skus, p_locations) AS u(s, l))
         ORDER BY s.sku, s.location
           FOR UPDATE
    LOOP
        keys := keys || (row_.sku || chr(31) || row_.location);
        free := free || row_.free_now;
    END LOOP;

    -- Read after the locks: a committed duplicate of an order in this batch is now visible.
    FOR row_ IN
        SELECT r.order_id,
               CASE WHEN bool_or(r.state = 'held') THEN 'held'
                    WHEN bool_or(r.state = 'committed') THEN 'committed'
                    ELSE min(r.state) END AS state
          FROM reservations r
         WHERE r.order_id = ANY (p_order_ids)
         GROUP BY r.order_id
    LOOP
        seen_orders := seen_orders || row_.order_id;
        seen_states := seen_states || row_.state;
    END LOOP;

    FOR i IN 1 .. coalesce(cardinality(p_order_ids), 0) LOOP
        first_line := j;
        WHILE j <= n_lines AND p_line_req[j] = i LOOP
            j := j + 1;
        END LOOP;

        pos := array_position(seen_orders, p_order_ids[i]);
        IF pos IS NOT NULL THEN
            prior := seen_states[pos];
            FOR l IN first_line .. j - 1 LOOP
                o_req := i; o_sku := p_skus[l]; o_location := p_locations[l];
                o_requested := p_quantities[l]; o_available := NULL;
                o_state := prior; o_replayed := true;
                RETURN NEXT;
            END LOOP;
            CONTINUE;
        END IF;

        fits := true;
        FOR l IN first_line .. j - 1 LOOP
            pos := array_position(keys, p_skus[l] || chr(31) || p_locations[l]);
            IF pos IS NULL OR free[pos] < p_quantities[l] THEN
                fits := false;
            END IF;
        END LOOP;

        FOR l IN first_line .. j - 1 LOOP
            pos := array_position(keys, p_skus[l] || chr(31) || p_locations[l]);
            IF fits THEN
                free[pos] := free[pos] - p_quantities[l];
                g_order := g_order || p_order_ids[i];
                g_sku := g_sku || p_skus[l];
                g_loc := g_loc || p_locations[l];
                g_qty := g_qty || p_quantities[l];
                g_expires := g_expires || (now() + make_interval(secs => p_ttl_seconds[i]));
            END IF;
            o_req := i; o_sku := p_skus[l]; o_location := p_locations[l];
            o_requested := p_quantities[l];
            o_available := CASE WHEN pos IS NULL THEN NULL ELSE free[pos] END;
            o_state := CASE WHEN fits THEN 'held' ELSE 'short' END;
            o_replayed := false;
            RETURN NEXT;
        END LOOP;
        IF fits THEN
            seen_orders := seen_orders || p_order_ids[i];
            seen_states := seen_states || 'held'::text;
        END IF;
    END LOOP;

    IF cardinality(g_order) > 0 THEN
        INSERT INTO reservations (order_id, sku, location, quantity, state, expires_at)
        SELECT u.o, u.s, u.l, u.q, 'held', u.e
          FROM unnest(g_order, g_sku, g_loc, g_qty, g_expires) AS u(o, s, l, q, e);

        UPDATE stock_levels s
           SET reserved = s.reserved + d.q, version = s.version + 1, updated_at = now()
          FROM (SELECT u.s, u.l, sum(u.q) AS q
                  FROM unnest(g_sku, g_loc, g_qty) AS u(s, l, q)
                 GROUP BY u.s, u.l) AS d
         WHERE s.sku = d.s AND s.location = d.l;

        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        SELECT u.s, u.l, 0, u.q, 'reserve', u.o, 'reserve:' || u.o || ':' || u.s || ':' || u.l
          FROM unnest(g_order, g_sku, g_loc, g_qty) AS u(o, s, l, q);
    END IF;
END;
$fn$;
