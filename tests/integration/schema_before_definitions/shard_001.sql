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
    order_id   text        NOT NULL,
    sku        text        NOT NULL,
    location   text        NOT NULL,
    quantity   integer     NOT NULL CHECK (quantity > 0),
    state      text        NOT NULL CHECK (state IN ('held', 'committed', 'released', 'expired')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The idempotency guard: one hold per order and stock row, ever.
    PRIMARY KEY (order_id, sku, location)
);

-- Only what the hot path must maintain: every index here costs each reservation an insert.
CREATE INDEX reservations_due_for_expiry ON reservations (expires_at) WHERE state = 'held';

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

-- Reserve a batch of requests in arrival order, in one statement and one transaction.
--
-- Each request is all-or-nothing over its lines. Requests are served first come, first served. An
-- order that already has rows on this shard is answered with its recorded state and changes nothing
-- (the primary key above is the backstop). Order ids within one batch must be distinct. Stock rows are locked in key order before anything else,
-- so concurrent batches cannot deadlock, and a duplicate of an in-flight order waits for it to commit.
-- The allocation runs in memory; the writes are three set-based statements for the whole batch.
CREATE FUNCTION reserve_stock(
    p_order_ids   text[],    -- one per request, in arrival order, distinct
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
    -- Local copies are held in expanded form, so element access is O(1) rather than a scan.
    orders      text[]    := p_order_ids;
    ttls        integer[] := p_ttl_seconds;
    line_req    integer[] := p_line_req;
    skus        text[]    := p_skus;
    locs        text[]    := p_locations;
    qtys        integer[] := p_quantities;
    n_lines     integer   := coalesce(cardinality(p_skus), 0);
    line_pos    integer[] := '{}';  -- per line: index into keys/free, NULL when no stock row
    keys        text[]    := '{}';
    free        bigint[]  := '{}';
    seen_orders text[]    := '{}';
    seen_states text[]    := '{}';
    granted     boolean[] := '{}';  -- per line
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
        keys[cardinality(keys) + 1] := row_.sku || chr(31) || row_.location;
        free[cardinality(free) + 1] := row_.free_now;
    END LOOP;
    FOR l IN 1 .. n_lines LOOP
        line_pos[l] := array_position(keys, skus[l] || chr(31) || locs[l]);
        granted[l] := false;
    END LOOP;

    -- Read after the locks: a committed earlier call for an order in this batch is now visible.
    FOR row_ IN
        SELECT r.order_id,
               CASE WHEN bool_or(r.state = 'held') THEN 'held'
                    WHEN bool_or(r.state = 'committed') THEN 'committed'
                    ELSE min(r.state) END AS state
          FROM reservations r
         WHERE r.order_id = ANY (p_order_ids)
         GROUP BY r.order_id
    LOOP
        seen_orders[cardinality(seen_orders) + 1] := row_.order_id;
        seen_states[cardinality(seen_states) + 1] := row_.state;
    END LOOP;

    FOR i IN 1 .. coalesce(cardinality(orders), 0) LOOP
        first_line := j;
        WHILE j <= n_lines AND line_req[j] = i LOOP
            j := j + 1;
        END LOOP;

        pos := CASE WHEN cardinality(seen_orders) = 0 THEN NULL ELSE array_position(seen_orders, orders[i]) END;
        IF pos IS NOT NULL THEN
            prior := seen_states[pos];
            FOR l IN first_line .. j - 1 LOOP
                o_req := i; o_sku := skus[l]; o_location := locs[l];
                o_requested := qtys[l]; o_available := NULL;
                o_state := prior; o_replayed := true;
                RETURN NEXT;
            END LOOP;
            CONTINUE;
        END IF;

        fits := true;
        FOR l IN first_line .. j - 1 LOOP
            IF line_pos[l] IS NULL OR free[line_pos[l]] < qtys[l] THEN
                fits := false;
            END IF;
        END LOOP;

        FOR l IN first_line .. j - 1 LOOP
            pos := line_pos[l];
            IF fits THEN
                free[pos] := free[pos] - qtys[l];
                granted[l] := true;
            END IF;
            o_req := i; o_sku := skus[l]; o_location := locs[l]; o_requested := qtys[l];
            o_available := CASE WHEN pos IS NULL THEN NULL ELSE free[pos] END;
            o_state := CASE WHEN fits THEN 'held' ELSE 'short' END;
            o_replayed := false;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    -- The writes: three set-based statements for the whole batch.
    INSERT INTO reservations (order_id, sku, location, quantity, state, expires_at)
    SELECT o.id, u.s, u.l, u.q, 'held', now() + make_interval(secs => o.ttl)
      FROM unnest(p_line_req, p_skus, p_locations, p_quantities, granted) AS u(r, s, l, q, g)
      JOIN unnest(p_order_ids, p_ttl_seconds) WITH ORDINALITY AS o(id, ttl, r) ON o.r = u.r
     WHERE u.g;

    UPDATE stock_levels s
       SET reserved = s.reserved + d.q, version = s.version + 1, updated_at = now()
      FROM (SELECT u.s, u.l, sum(u.q) AS q
              FROM unnest(p_skus, p_locations, p_quantities, granted) AS u(s, l, q, g)
             WHERE u.g
             GROUP BY u.s, u.l) AS d
     WHERE s.sku = d.s AND s.location = d.l;

    INSERT INTO stock_movements
           (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
    SELECT u.s, u.l, 0, u.q, 'reserve', o.id, 'reserve:' || o.id || ':' || u.s || ':' || u.l
      FROM unnest(p_line_req, p_skus, p_locations, p_quantities, granted) AS u(r, s, l, q, g)
      JOIN unnest(p_order_ids) WITH ORDINALITY AS o(id, r) ON o.r = u.r
     WHERE u.g;
END;
$fn$;

-- Tell listeners (the sold-out hint in API and client processes) when stock becomes available again:
-- a release, expiry, receipt, adjustment or import. Reservations never fire it, so the hot path pays
-- nothing. One notification per statement: the SKUs, or '*' when too many changed to list.
CREATE FUNCTION notify_stock_available() RETURNS trigger LANGUAGE plpgsql AS $fn$
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

CREATE FUNCTION notify_stock_inserted() RETURNS trigger LANGUAGE plpgsql AS $fn$
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

CREATE TRIGGER stock_available_after_update
    AFTER UPDATE ON stock_levels
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_stock_available();

CREATE TRIGGER stock_available_after_insert
    AFTER INSERT ON stock_levels
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_stock_inserted();
