"""The life of a hold: reserve, pin, release, commit and expire. Each is one statement or one short
transaction, is idempotent (by order id), and writes its ledger rows in the same transaction. Each
takes its locks in the store's global order (see ``invsaga.store.stock``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Integer, Text

from invsaga.domain.errors import ReservationClosed, ShardUnavailable
from invsaga.domain.keys import HoldMovement, hold_movement_key
from invsaga.domain.stock import HoldState, ReserveOutcome, ReserveRequest, StockLine, TransitionOutcome
from invsaga.store.allocation import allocation_rule, location_argument, reserve_outcome
from invsaga.store.databases import shard_label, unavailable_as
from invsaga.store.ledger import key_sql, record_movements
from invsaga.store.sharded import ShardedStore, refuse_if_moved
from invsaga.store.slot_ownership import OWNED_HOLDS

# reserve_stock (schema/definitions/shard/reserve_stock.sql) locks, allocates and writes the batch.
_RESERVE = text(
    "SELECT o_req, o_sku, o_location, o_requested, o_available, o_state, o_replayed "
    "FROM reserve_stock(:orders, :ttls, :line_req, :skus, :locations, :quantities)"
).bindparams(
    bindparam("orders", type_=ARRAY(Text)),
    bindparam("ttls", type_=ARRAY(Integer)),
    bindparam("line_req", type_=ARRAY(Integer)),
    bindparam("skus", type_=ARRAY(Text)),
    bindparam("locations", type_=ARRAY(Text)),
    bindparam("quantities", type_=ARRAY(Integer)),
)

# Locks the stock rows an order holds, plus the rows named by the caller (a reserve of the same
# order may still be in flight there; for a line without a location, every row of its SKU, as that
# reserve locks them), in key order. Only the holds of slots this shard serves count: during a move it
# also has a copy arriving and what left, and the guard would refuse a write to those, so an order's
# other lines could not be committed or released here until the move ended (see slot_ownership).
_LOCK_ORDER_ROWS = text(
    "SELECT s.sku, s.location FROM stock_levels s WHERE (s.sku, s.location) IN ("
    f"  SELECT r.sku, r.location FROM {OWNED_HOLDS} r WHERE r.order_id = :order_id AND r.state = 'held'"
    "  UNION SELECT u.s, u.l FROM unnest(:skus, :locations) AS u(s, l) WHERE u.l IS NOT NULL"
    "  UNION SELECT a.sku, a.location FROM stock_levels a"
    "   JOIN unnest(:skus, :locations) AS u(s, l) ON a.sku = u.s AND u.l IS NULL)"
    " ORDER BY s.sku, s.location FOR UPDATE"
).bindparams(bindparam("skus", type_=ARRAY(Text)), bindparam("locations", type_=ARRAY(Text)))


_LOCKED_ONLY = (
    " AND (sku, location) IN (SELECT u.s, u.l FROM unnest(:locked_skus, :locked_locations) AS u(s, l))"
)
_LOCKED_PARAMS = (
    bindparam("locked_skus", type_=ARRAY(Text)),
    bindparam("locked_locations", type_=ARRAY(Text)),
)

# Holds of the order on stock rows this transaction did not lock: a reserve landed in between.
_HELD_UNLOCKED = text(
    f"SELECT count(*) FROM {OWNED_HOLDS} r WHERE order_id = :order_id AND state = 'held'"
    " AND (sku, location) NOT IN (SELECT u.s, u.l FROM unnest(:locked_skus, :locked_locations) AS u(s, l))"
).bindparams(*_LOCKED_PARAMS)

# Read after the order's stock rows are locked: every writer of a hold locks its stock row first, so
# these counts cannot change before this transaction ends.
_ORDER_STATES = text(
    f"SELECT state, count(*) AS lines FROM {OWNED_HOLDS} r WHERE order_id = :order_id GROUP BY state"
)

# Every SKU the order has a row of here, its slot served here or not.
_ORDER_SKUS = text("SELECT DISTINCT sku FROM reservations WHERE order_id = :order_id")

# Pinning is the checkout saying "I am about to charge for these": the sweeper skips pinned holds.
_PIN = text(
    f"""
    WITH pinned AS (
        UPDATE reservations SET pinned_at = now(), updated_at = now()
         WHERE order_id = :order_id AND state = 'held' AND pinned_at IS NULL {_LOCKED_ONLY}
        RETURNING 1
    )
    SELECT count(*) FROM pinned
    """
).bindparams(*_LOCKED_PARAMS)


def _ending_holds(
    movement: HoldMovement, moved: str, *, order_id: str = ":order_id", sells: bool = False, fence: str = ""
) -> str:
    """One statement that ends holds: ``moved`` (an UPDATE of reservations returning the ended rows'
    sku, location and quantity, and ``order_id`` unless the statement has one) frees their reserved
    units, takes them off on_hand as well when the end ``sells`` them, and writes their ledger rows
    (``fence``: more CTEs after ``moved``). It returns how many lines moved."""
    sold = "on_hand = s.on_hand - m.q, " if sells else ""
    ledger = record_movements(
        movement,
        rows="moved",
        delta_on_hand="-quantity" if sells else "0",
        delta_reserved="-quantity",
        reference=order_id,
        key=key_sql(hold_movement_key, f"'{movement}'", order_id, "sku", "location"),
    )
    return f"""
    WITH moved AS ({moved}){fence}, stock AS (
        UPDATE stock_levels s
           SET {sold}reserved = s.reserved - m.q, version = s.version + 1, updated_at = now()
          FROM (SELECT sku, location, sum(quantity) AS q FROM moved GROUP BY sku, location) m
         WHERE s.sku = m.sku AND s.location = m.location
    ), ledger AS ({ledger})
    SELECT count(*) FROM moved
    """


_RELEASE = text(
    _ending_holds(
        "release",
        "UPDATE reservations SET state = 'released', updated_at = now()"
        f" WHERE order_id = :order_id AND state = 'held' {_LOCKED_ONLY} RETURNING sku, location, quantity",
        fence="""
    , fence AS (
        -- Releasing before the reserve landed leaves released rows behind, so a late reserve of
        -- this order replays "released" instead of stranding a hold. A line without a location is
        -- fenced at its SKU's first location, and only if the order has no row here at all: one row
        -- is enough to make the reserve replay, and more would invent pieces it never had.
        INSERT INTO reservations (order_id, sku, location, quantity, state, expires_at)
        SELECT :order_id, u.s, u.l, u.q, 'released', now()
          FROM unnest(:skus, :locations, :quantities) AS u(s, l, q)
         WHERE u.l IS NOT NULL
        UNION ALL
        SELECT :order_id, u.s, min(a.location), u.q, 'released', now()
          FROM unnest(:skus, :locations, :quantities) AS u(s, l, q)
          JOIN stock_levels a ON a.sku = u.s
         WHERE u.l IS NULL AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.order_id = :order_id)
         GROUP BY u.s, u.q
        ON CONFLICT (order_id, sku, location) DO NOTHING
    )""",
    )
).bindparams(
    bindparam("skus", type_=ARRAY(Text)),
    bindparam("locations", type_=ARRAY(Text)),
    bindparam("quantities", type_=ARRAY(Integer)),
    *_LOCKED_PARAMS,
)

_COMMIT = text(
    _ending_holds(
        "commit",
        "UPDATE reservations SET state = 'committed', updated_at = now()"
        f" WHERE order_id = :order_id AND state = 'held' {_LOCKED_ONLY} RETURNING sku, location, quantity",
        sells=True,
    )
).bindparams(*_LOCKED_PARAMS)

# Not the holds of a slot the shard does not serve (a copy arriving, or what a move left), nor of one
# under a move's fence: the shard would refuse their expiry, and with it the whole batch.
_DUE_HOLDS = text(
    "SELECT order_id, sku, location FROM reservations r"
    " WHERE state = 'held' AND pinned_at IS NULL AND expires_at < now()"
    "   AND NOT EXISTS (SELECT 1 FROM stock_levels o JOIN slot_fences f ON f.slot = o.slot"
    "                    WHERE o.sku = r.sku AND o.location = r.location AND f.state <> 'copying')"
    " ORDER BY expires_at LIMIT :limit"
)

_LOCK_ROWS = text(
    "SELECT 1 FROM stock_levels s"
    " WHERE (s.sku, s.location) IN (SELECT u.s, u.l FROM unnest(:skus, :locations) AS u(s, l))"
    " ORDER BY s.sku, s.location FOR UPDATE"
).bindparams(bindparam("skus", type_=ARRAY(Text)), bindparam("locations", type_=ARRAY(Text)))

_EXPIRE = text(
    _ending_holds(
        "expire",
        "UPDATE reservations SET state = 'expired', updated_at = now()"
        " WHERE (order_id, sku, location) IN (SELECT * FROM unnest(:orders, :skus, :locations))"
        "   AND state = 'held' AND pinned_at IS NULL AND expires_at < now()"
        " RETURNING order_id, sku, location, quantity",
        order_id="order_id",
    )
).bindparams(
    bindparam("orders", type_=ARRAY(Text)),
    bindparam("skus", type_=ARRAY(Text)),
    bindparam("locations", type_=ARRAY(Text)),
)

#: Attempts to move an order's holds while a reserve of the same order keeps landing.
_MOVE_ATTEMPTS = 5


class HoldStore(ShardedStore):
    """Holds: stock set aside for an order until it is sold (committed), released or expired."""

    async def reserve(self, shard: int, request: ReserveRequest) -> ReserveOutcome:
        (outcome,) = await self.reserve_batch(shard, [request])
        return outcome

    async def reserve_batch(self, shard: int, requests: Sequence[ReserveRequest]) -> list[ReserveOutcome]:
        """Apply requests in order in one transaction: each all-or-nothing, first come first served.

        A repeated order id in the batch is sent once; its repeats get the first one's answer.
        """
        if not requests:
            return []
        unique: dict[str, ReserveRequest] = {}
        for request in requests:
            self.validate_routing(shard, request.lines)
            unique.setdefault(request.order_id, request)
        params: dict[str, list[Any]] = {
            "orders": [], "ttls": [], "line_req": [], "skus": [], "locations": [], "quantities": [],
        }  # fmt: skip
        for index, request in enumerate(unique.values(), start=1):
            params["orders"].append(request.order_id)
            params["ttls"].append(request.ttl_seconds)
            rule = allocation_rule(request.allocation)
            for line in sorted(request.lines, key=lambda ln: ln.key):
                params["line_req"].append(index)
                params["skus"].append(line.sku)
                params["locations"].append(location_argument(line, rule))
                params["quantities"].append(line.quantity)
        # One statement is its own transaction (the function locks, allocates and writes), so autocommit
        # saves the BEGIN and COMMIT round trips; begin() keeps it a transaction on any other engine.
        async with unavailable_as(shard_label(shard)), self._autocommit(shard).begin() as conn:
            rows = (await conn.execute(_RESERVE, params)).all()
            unknown = [row.o_sku for row in rows if row.o_available is None]
            if unknown:
                await refuse_if_moved(conn, shard, unknown)
        by_request: dict[int, list[Any]] = {}
        for row in rows:
            by_request.setdefault(row.o_req, []).append(row)
        first = {
            order_id: reserve_outcome(order_id, by_request[i]) for i, order_id in enumerate(unique, start=1)
        }
        outcomes = []
        answered: set[str] = set()
        for request in requests:
            outcome = first[request.order_id]
            if request.order_id in answered and outcome.held:
                outcome = outcome.model_copy(update={"replayed": True})
            answered.add(request.order_id)
            outcomes.append(outcome)
        return outcomes

    async def release(self, shard: int, order_id: str, lines: Sequence[StockLine] = ()) -> TransitionOutcome:
        """Release the order's holds on this shard. A no-op when nothing (or no longer) is held.

        Pass the lines the order asked for: if the reserve has not landed yet, they fence it out.
        """
        params = self._order_params(shard, order_id, lines)
        params["quantities"] = [ln.quantity for ln in lines]
        moved, states = await self._move_holds(shard, _RELEASE, params, whole=False)
        return TransitionOutcome(order_id=order_id, moved_lines=moved, state=_summary(states))

    async def pin(self, shard: int, order_id: str, lines: Sequence[StockLine]) -> TransitionOutcome:
        """Pin every hold of the order on this shard, or none: from now on no sweeper may expire them.

        A checkout pins before it charges. Refused (``ReservationClosed``, nothing changed) when any of
        ``lines`` is not held any more, so a buyer is never charged for units that were already freed.
        Pass the pieces the reserve allocated (``ReserveOutcome.allocations``), so that a piece missing
        is seen; a line without a location counts as at least one piece.
        """
        params = self._order_params(shard, order_id, lines)
        moved, states = await self._move_holds(shard, _PIN, params, whole=True, lines=len(lines))
        if not _intact(states, len(lines)):
            raise _closed(order_id, shard, "pinned", states)
        return TransitionOutcome(order_id=order_id, moved_lines=moved, state=_summary(states))

    async def commit(self, shard: int, order_id: str, lines: Sequence[StockLine] = ()) -> TransitionOutcome:
        """Turn every hold of the order on this shard into a sale, or none. Replays are no-ops.

        Any line expired or released refuses the whole commit (``ReservationClosed``, nothing moved):
        selling the rest would confirm an order with a line missing.
        """
        params = self._order_params(shard, order_id, lines)
        moved, states = await self._move_holds(shard, _COMMIT, params, whole=True)
        if set(states) != {HoldState.COMMITTED}:
            raise _closed(order_id, shard, "committed", states)
        return TransitionOutcome(order_id=order_id, moved_lines=moved, state=HoldState.COMMITTED)

    def _order_params(self, shard: int, order_id: str, lines: Sequence[StockLine]) -> dict[str, Any]:
        self.validate_routing(shard, lines)
        return {
            "order_id": order_id,
            "skus": [ln.sku for ln in lines],
            "locations": [ln.location for ln in lines],
        }

    async def _move_holds(
        self, shard: int, statement: Any, params: dict[str, Any], *, whole: bool, lines: int = 0
    ) -> tuple[int, dict[str, int]]:
        """Lock the order's stock rows in key order, then apply ``statement`` to its holds on exactly
        those rows; returns how many lines it moved and the order's lines per state afterwards.

        ``whole``: the order moves as one. If any of its lines is neither held nor committed (or fewer
        than ``lines`` exist), nothing is applied and the states found are returned for the caller to
        refuse. A reserve of the same order can commit between the lock and the move, on rows not yet
        locked; taking those locks now would break the global lock order, so the transaction rolls back
        and retries.
        """
        order = {"order_id": params["order_id"]}
        for _ in range(_MOVE_ATTEMPTS):
            async with unavailable_as(shard_label(shard)), self._engine(shard).connect() as conn:
                transaction = await conn.begin()
                locked = (await conn.execute(_LOCK_ORDER_ROWS, params)).all()
                scoped = {
                    **params,
                    "locked_skus": [row.sku for row in locked],
                    "locked_locations": [row.location for row in locked],
                }
                if whole:
                    before = await _order_states(conn, order)
                    if not _intact(before, lines):
                        if not before:
                            await _refuse_if_moved(conn, shard, params)
                        await transaction.rollback()
                        return 0, before
                moved = int(await conn.scalar(statement, scoped) or 0)
                if not moved:  # nothing here: a stale map, if the order's slots left this shard
                    await _refuse_if_moved(conn, shard, params)
                if await conn.scalar(_HELD_UNLOCKED, {**order, **scoped}):
                    await transaction.rollback()
                    continue
                after = await _order_states(conn, order)
                await transaction.commit()
                return moved, after
        raise ShardUnavailable(
            f"order {params['order_id']} kept gaining holds on shard {shard} while being moved",
            database=shard_label(shard),
        )

    async def expire(self, shard: int, *, limit: int = 500) -> int:
        """Expire one small batch of holds past their TTL; returns how many lines moved."""
        async with unavailable_as(shard_label(shard)), self._engine(shard).begin() as conn:
            due = (await conn.execute(_DUE_HOLDS, {"limit": limit})).all()
            if not due:
                return 0
            await conn.execute(
                _LOCK_ROWS, {"skus": [r.sku for r in due], "locations": [r.location for r in due]}
            )
            moved = await conn.scalar(
                _EXPIRE,
                {
                    "orders": [r.order_id for r in due],
                    "skus": [r.sku for r in due],
                    "locations": [r.location for r in due],
                },
            )
        return int(moved or 0)

    async def expire_all(self, shard: int, *, batch: int = 500) -> int:
        total = 0
        while moved := await self.expire(shard, limit=batch):
            total += moved
        return total


_ALIVE = {HoldState.HELD.value, HoldState.COMMITTED.value}


async def _refuse_if_moved(conn: Any, shard: int, params: dict[str, Any]) -> None:
    """``refuse_if_moved`` for the lines named, or, for a call that names none, for every row the
    order has here: the rows of a slot that left (until the mover deletes them) are not counted as
    the order's, so without this a commit by order id would read "no lines here" and refuse the
    order as closed, when its holds went on to another shard."""
    skus = (
        params["skus"] or (await conn.execute(_ORDER_SKUS, {"order_id": params["order_id"]})).scalars().all()
    )
    await refuse_if_moved(conn, shard, skus)


def _intact(states: dict[str, int], lines: int) -> bool:
    """Whether the order's lines on a shard can still move as one: at least ``lines`` of them, and
    every one held or committed (none expired or released)."""
    return bool(states) and states.keys() <= _ALIVE and sum(states.values()) >= lines


async def _order_states(conn: Any, order: dict[str, str]) -> dict[str, int]:
    return {row.state: int(row.lines) for row in (await conn.execute(_ORDER_STATES, order)).all()}


def _summary(states: dict[str, int]) -> HoldState | None:
    """One state for the order's lines on a shard: held while any is held, then committed, else the
    first of the rest (they are all ends: released or expired)."""
    for state in (HoldState.HELD, HoldState.COMMITTED, HoldState.EXPIRED, HoldState.RELEASED):
        if state in states:
            return state
    return None


def _closed(order_id: str, shard: int, wanted: str, states: dict[str, int]) -> ReservationClosed:
    found = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
    return ReservationClosed(
        f"order {order_id} cannot be {wanted} on shard {shard}: its lines there are {found}",
        order_id=order_id,
        shard=shard,
        state=_summary(states),
        lines=states,
    )
