"""Every stock operation, one function each. Each is one statement or one short transaction, is
idempotent by key, and writes its ledger rows in the same transaction as the change they record.

Lock order is global: stock rows first, in (sku, location) order, then reservation rows. Any operation
that touches several stock rows takes their locks in that order up front, so none can deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import Integer, Text

from invsaga.domain.errors import (
    BelowReserved,
    IdempotencyKeyConflict,
    InvalidInput,
    ReservationClosed,
    ShardUnavailable,
    UnknownSku,
    VersionConflict,
)
from invsaga.domain.stock import (
    HoldState,
    ReserveOutcome,
    ReserveRequest,
    Shortage,
    StockLevel,
    StockLine,
    TransitionOutcome,
)
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.stock_csv import MAX_QUANTITY

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
# order may still be in flight there), in key order.
_LOCK_ORDER_ROWS = text(
    "SELECT s.sku, s.location FROM stock_levels s WHERE (s.sku, s.location) IN ("
    "  SELECT r.sku, r.location FROM reservations r WHERE r.order_id = :order_id AND r.state = 'held'"
    "  UNION SELECT u.s, u.l FROM unnest(:skus, :locations) AS u(s, l))"
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
    "SELECT count(*) FROM reservations WHERE order_id = :order_id AND state = 'held'"
    " AND (sku, location) NOT IN (SELECT u.s, u.l FROM unnest(:locked_skus, :locked_locations) AS u(s, l))"
).bindparams(*_LOCKED_PARAMS)

# Read after the order's stock rows are locked: every writer of a hold locks its stock row first, so
# these counts cannot change before this transaction ends.
_ORDER_STATES = text(
    "SELECT state, count(*) AS lines FROM reservations WHERE order_id = :order_id GROUP BY state"
)

# Pinning is the checkout saying "I am about to charge for these": the sweeper skips pinned holds.
_PIN = text(
    """
    WITH pinned AS (
        UPDATE reservations SET pinned_at = now(), updated_at = now()
         WHERE order_id = :order_id AND state = 'held' AND pinned_at IS NULL LOCKED_ONLY
        RETURNING 1
    )
    SELECT count(*) FROM pinned
    """.replace("LOCKED_ONLY", _LOCKED_ONLY)
).bindparams(*_LOCKED_PARAMS)

_RELEASE = text(
    """
    WITH moved AS (
        UPDATE reservations SET state = 'released', updated_at = now()
         WHERE order_id = :order_id AND state = 'held' LOCKED_ONLY
        RETURNING sku, location, quantity
    ), fence AS (
        -- Releasing before the reserve landed leaves released rows behind, so a late reserve of
        -- this order replays "released" instead of stranding a hold.
        INSERT INTO reservations (order_id, sku, location, quantity, state, expires_at)
        SELECT :order_id, u.s, u.l, u.q, 'released', now()
          FROM unnest(:skus, :locations, :quantities) AS u(s, l, q)
        ON CONFLICT (order_id, sku, location) DO NOTHING
    ), stock AS (
        UPDATE stock_levels s
           SET reserved = s.reserved - m.q, version = s.version + 1, updated_at = now()
          FROM (SELECT sku, location, sum(quantity) AS q FROM moved GROUP BY sku, location) m
         WHERE s.sku = m.sku AND s.location = m.location
    ), ledger AS (
        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        SELECT sku, location, 0, -quantity, 'release', :order_id,
               'release:' || :order_id || ':' || sku || ':' || location
          FROM moved
    )
    SELECT count(*) FROM moved
    """.replace("LOCKED_ONLY", _LOCKED_ONLY)
).bindparams(
    bindparam("skus", type_=ARRAY(Text)),
    bindparam("locations", type_=ARRAY(Text)),
    bindparam("quantities", type_=ARRAY(Integer)),
    *_LOCKED_PARAMS,
)

_COMMIT = text(
    """
    WITH moved AS (
        UPDATE reservations SET state = 'committed', updated_at = now()
         WHERE order_id = :order_id AND state = 'held' LOCKED_ONLY
        RETURNING sku, location, quantity
    ), stock AS (
        UPDATE stock_levels s
           SET on_hand = s.on_hand - m.q, reserved = s.reserved - m.q,
               version = s.version + 1, updated_at = now()
          FROM (SELECT sku, location, sum(quantity) AS q FROM moved GROUP BY sku, location) m
         WHERE s.sku = m.sku AND s.location = m.location
    ), ledger AS (
        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        SELECT sku, location, -quantity, -quantity, 'commit', :order_id,
               'commit:' || :order_id || ':' || sku || ':' || location
          FROM moved
    )
    SELECT count(*) FROM moved
    """.replace("LOCKED_ONLY", _LOCKED_ONLY)
).bindparams(*_LOCKED_PARAMS)

_DUE_HOLDS = text(
    "SELECT order_id, sku, location FROM reservations"
    " WHERE state = 'held' AND pinned_at IS NULL AND expires_at < now() ORDER BY expires_at LIMIT :limit"
)

_LOCK_ROWS = text(
    "SELECT 1 FROM stock_levels s"
    " WHERE (s.sku, s.location) IN (SELECT u.s, u.l FROM unnest(:skus, :locations) AS u(s, l))"
    " ORDER BY s.sku, s.location FOR UPDATE"
).bindparams(bindparam("skus", type_=ARRAY(Text)), bindparam("locations", type_=ARRAY(Text)))

_EXPIRE = text(
    """
    WITH moved AS (
        UPDATE reservations SET state = 'expired', updated_at = now()
         WHERE (order_id, sku, location) IN (SELECT * FROM unnest(:orders, :skus, :locations))
           AND state = 'held' AND pinned_at IS NULL AND expires_at < now()
        RETURNING order_id, sku, location, quantity
    ), stock AS (
        UPDATE stock_levels s
           SET reserved = s.reserved - m.q, version = s.version + 1, updated_at = now()
          FROM (SELECT sku, location, sum(quantity) AS q FROM moved GROUP BY sku, location) m
         WHERE s.sku = m.sku AND s.location = m.location
    ), ledger AS (
        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        SELECT sku, location, 0, -quantity, 'expire', order_id,
               'expire:' || order_id || ':' || sku || ':' || location
          FROM moved
    )
    SELECT count(*) FROM moved
    """
).bindparams(
    bindparam("orders", type_=ARRAY(Text)),
    bindparam("skus", type_=ARRAY(Text)),
    bindparam("locations", type_=ARRAY(Text)),
)

_RECEIVE = text(
    """
    WITH movement AS (
        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        VALUES (:sku, :location, :quantity, 0, 'receive', :reference, :key)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING sku, location, delta_on_hand
    )
    INSERT INTO stock_levels AS s (sku, location, on_hand, reserved, version)
    SELECT sku, location, delta_on_hand, 0, 1 FROM movement
    ON CONFLICT (sku, location) DO UPDATE
       SET on_hand = s.on_hand + excluded.on_hand, version = s.version + 1, updated_at = now()
    RETURNING s.sku, s.location, s.on_hand, s.reserved, s.version
    """
)

# A replayed receipt: what its key received first (the key names its sku and location), and the level.
_RECEIVED = text(
    "SELECT m.delta_on_hand AS received, s.sku, s.location, s.on_hand, s.reserved, s.version"
    " FROM stock_movements m JOIN stock_levels s ON s.sku = m.sku AND s.location = m.location"
    " WHERE m.idempotency_key = :key"
)

#: Postgres' numeric_value_out_of_range: on_hand would pass bigint.
_OUT_OF_RANGE = "22003"

# Compare-and-set. The snapshot row `cur` must carry the expected version too, so the ledger delta
# is computed from exactly the on_hand that version had.
_ADJUST = text(
    """
    WITH cur AS (
        SELECT sku, location, on_hand FROM stock_levels
         WHERE sku = :sku AND location = :location AND version = :expected
           AND NOT EXISTS (SELECT 1 FROM stock_movements WHERE idempotency_key = :key)
    ), changed AS (
        UPDATE stock_levels s SET on_hand = :quantity, version = s.version + 1, updated_at = now()
          FROM cur
         WHERE s.sku = cur.sku AND s.location = cur.location
           AND s.version = :expected AND s.reserved <= :quantity
        RETURNING s.sku, s.location, s.on_hand, s.reserved, s.version, cur.on_hand AS old_on_hand
    ), ledger AS (
        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        SELECT sku, location, on_hand - old_on_hand, 0, 'adjust', :reference, :key FROM changed
    )
    SELECT sku, location, on_hand, reserved, version FROM changed
    """
)

# Creating a stock row is a compare-and-set against "no row yet" (expected version 0).
_CREATE = text(
    """
    WITH created AS (
        INSERT INTO stock_levels (sku, location, on_hand, reserved, version)
        SELECT :sku, :location, :quantity, 0, 1
         WHERE NOT EXISTS (SELECT 1 FROM stock_movements WHERE idempotency_key = :key)
        ON CONFLICT (sku, location) DO NOTHING
        RETURNING sku, location, on_hand, reserved, version
    ), ledger AS (
        INSERT INTO stock_movements
               (sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key)
        SELECT sku, location, on_hand, 0, 'adjust', :reference, :key FROM created
    )
    SELECT sku, location, on_hand, reserved, version FROM created
    """
)

_LEVELS = text(
    "SELECT sku, location, on_hand, reserved, version FROM stock_levels"
    " WHERE sku = ANY (:skus) ORDER BY sku, location"
).bindparams(bindparam("skus", type_=ARRAY(Text)))

_SKU_LEVELS = text(
    "SELECT sku, location, on_hand, reserved, version FROM stock_levels WHERE sku = :sku ORDER BY location"
)

_LEVEL = text(
    "SELECT sku, location, on_hand, reserved, version FROM stock_levels"
    " WHERE sku = :sku AND location = :location"
)

#: Attempts to move an order's holds while a reserve of the same order keeps landing.
_MOVE_ATTEMPTS = 5

_MOVEMENT_EXISTS = text("SELECT 1 FROM stock_movements WHERE idempotency_key = :key")


def _level(row: Any) -> StockLevel:
    return StockLevel(
        sku=row.sku,
        location=row.location,
        on_hand=row.on_hand,
        reserved=row.reserved,
        version=row.version,
    )


def check_quantity(quantity: int, *, minimum: int) -> int:
    """Refuse a quantity outside ``minimum``..bigint before it reaches SQL (and overflows there)."""
    if not minimum <= quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity must be from {minimum} to {MAX_QUANTITY}, got {quantity}")
    return quantity


class StockStore:
    """Stock operations over the sharded inventory. Stateless apart from its engines."""

    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self.router = databases.router

    def _engine(self, shard: int) -> AsyncEngine:
        if not 0 <= shard < len(self.databases.shards):
            raise InvalidInput(f"no shard {shard}; there are {len(self.databases.shards)}")
        return self.databases.shards[shard]

    def _autocommit(self, shard: int) -> AsyncEngine:
        self._engine(shard)
        return self.databases.shards_autocommit[shard]

    def validate_routing(self, shard: int, lines: Sequence[StockLine]) -> None:
        """Refuse lines that do not live on ``shard``: a misrouted line would read as unknown stock."""
        self._engine(shard)
        for line in lines:
            if self.router.shard_of(line.sku) != shard:
                raise InvalidInput(
                    f"sku {line.sku!r} lives on shard {self.router.shard_of(line.sku)}, not {shard}"
                )

    # --- holds -------------------------------------------------------------------------------

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
            for line in sorted(request.lines, key=lambda ln: ln.key):
                params["line_req"].append(index)
                params["skus"].append(line.sku)
                params["locations"].append(line.location)
                params["quantities"].append(line.quantity)
        # One statement is its own transaction (the function locks, allocates and writes), so autocommit
        # saves the BEGIN and COMMIT round trips; begin() keeps it a transaction on any other engine.
        async with unavailable_as(shard_label(shard)), self._autocommit(shard).begin() as conn:
            rows = (await conn.execute(_RESERVE, params)).all()
        by_request: dict[int, list[Any]] = {}
        for row in rows:
            by_request.setdefault(row.o_req, []).append(row)
        first = {
            order_id: _outcome(request, by_request[i])
            for i, (order_id, request) in enumerate(unique.items(), start=1)
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
        """
        params = self._order_params(shard, order_id, lines)
        moved, states = await self._move_holds(shard, _PIN, params, whole=True, lines=len(lines))
        if not _intact(states, len(lines)):
            raise _closed(order_id, shard, "pinned", states)
        return TransitionOutcome(order_id=order_id, moved_lines=moved, state=_summary(states))

    async def commit(self, shard: int, order_id: str) -> TransitionOutcome:
        """Turn every hold of the order on this shard into a sale, or none. Replays are no-ops.

        Any line expired or released refuses the whole commit (``ReservationClosed``, nothing moved):
        selling the rest would confirm an order with a line missing.
        """
        params = self._order_params(shard, order_id, ())
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
                        await transaction.rollback()
                        return 0, before
                moved = int(await conn.scalar(statement, scoped) or 0)
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

    # --- admin: receive and set ------------------------------------------------------------

    async def receive(
        self,
        sku: str,
        location: str,
        quantity: int,
        *,
        idempotency_key: str,
        reference: str = "receipt",
    ) -> StockLevel:
        """Add received units. The same key twice adds them once.

        The key is scoped to the sku and location, so one purchase order's key can receive each of its
        lines; the same key with another quantity is refused, since replaying it would hide the mismatch.
        """
        check_quantity(quantity, minimum=1)
        shard = self.router.shard_of(sku)
        key = f"receive:{sku}@{location}:{idempotency_key}"
        params = {"sku": sku, "location": location, "quantity": quantity, "reference": reference, "key": key}
        try:
            async with unavailable_as(shard_label(shard)), self._engine(shard).begin() as conn:
                row = (await conn.execute(_RECEIVE, params)).first()
                if row is None:
                    row = (await conn.execute(_RECEIVED, {"key": key})).one()
                    if row.received != quantity:
                        raise IdempotencyKeyConflict(
                            f"idempotency key {idempotency_key!r} already received {row.received} units "
                            f"of {sku}@{location}, not {quantity}; use a new key",
                            sku=sku,
                            location=location,
                            idempotency_key=idempotency_key,
                            received=row.received,
                            quantity=quantity,
                        )
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _OUT_OF_RANGE:
                raise
            raise InvalidInput(
                f"receiving {quantity} units would take {sku}@{location} past the largest on_hand, "
                f"{MAX_QUANTITY}",
                sku=sku,
                location=location,
                quantity=quantity,
            ) from None
        return _level(row)

    async def adjust(
        self,
        sku: str,
        location: str,
        quantity: int,
        *,
        expected_version: int,
        idempotency_key: str,
        reference: str = "adjustment",
    ) -> StockLevel:
        """Set on_hand if the row is still at ``expected_version`` (0: the row must not exist)."""
        check_quantity(quantity, minimum=0)
        shard = self.router.shard_of(sku)
        params = {
            "sku": sku,
            "location": location,
            "quantity": quantity,
            "expected": expected_version,
            "reference": reference,
            "key": f"adjust:{idempotency_key}",
        }
        async with unavailable_as(shard_label(shard)), self._engine(shard).begin() as conn:
            statement = _CREATE if expected_version == 0 else _ADJUST
            row = (await conn.execute(statement, params)).first()
            if row is not None:
                return _level(row)
            replayed = await conn.scalar(_MOVEMENT_EXISTS, {"key": params["key"]})
            current = (await conn.execute(_LEVEL, {"sku": sku, "location": location})).first()
        if replayed and current is not None:
            return _level(current)
        raise _adjust_failure(sku, location, quantity, expected_version, current)

    # --- reads -------------------------------------------------------------------------------

    async def get(self, sku: str) -> list[StockLevel]:
        """Every location of one SKU: one indexed query on its shard, the point-read hot path."""
        shard = self.router.shard_of(sku)
        async with unavailable_as(shard_label(shard)), self._autocommit(shard).connect() as conn:
            levels = [_level(r) for r in (await conn.execute(_SKU_LEVELS, {"sku": sku})).all()]
        if not levels:
            raise UnknownSku(f"unknown sku {sku!r}: no stock row on any location", sku=sku)
        return levels

    async def get_many(self, skus: Sequence[str]) -> dict[str, list[StockLevel]]:
        """Read many SKUs, one query per shard, all shards concurrently."""
        groups = self.router.group_skus(dict.fromkeys(skus))

        async def read(shard: int, shard_skus: list[str]) -> list[StockLevel]:
            async with unavailable_as(shard_label(shard)), self._autocommit(shard).connect() as conn:
                rows = (await conn.execute(_LEVELS, {"skus": shard_skus})).all()
            return [_level(r) for r in rows]

        results = await asyncio.gather(*(read(s, group) for s, group in groups.items()))
        levels: dict[str, list[StockLevel]] = {}
        for batch in results:
            for level in batch:
                levels.setdefault(level.sku, []).append(level)
        return levels


_ALIVE = {HoldState.HELD.value, HoldState.COMMITTED.value}


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


def _outcome(request: ReserveRequest, rows: list[Any]) -> ReserveOutcome:
    state = rows[0].o_state
    if state == "short":
        return ReserveOutcome(
            order_id=request.order_id,
            state=None,
            shortages=[
                Shortage(
                    sku=r.o_sku,
                    location=r.o_location,
                    requested=r.o_requested,
                    available=max(0, r.o_available or 0),
                )
                for r in rows
                if r.o_available is None or r.o_available < r.o_requested
            ],
            unknown_skus=[r.o_sku for r in rows if r.o_available is None],
        )
    return ReserveOutcome(
        order_id=request.order_id, state=HoldState(state), replayed=bool(rows[0].o_replayed)
    )


def _adjust_failure(sku: str, location: str, quantity: int, expected: int, current: Any) -> Exception:
    if current is None:
        return UnknownSku(f"unknown sku {sku!r} at location {location!r}", sku=sku, location=location)
    if current.version != expected:
        return VersionConflict(
            f"{sku}@{location} is at version {current.version}, not {expected}; re-read it and try again",
            sku=sku,
            location=location,
            expected=expected,
            actual=current.version,
        )
    return BelowReserved(
        f"cannot set {sku}@{location} to {quantity}: {current.reserved} units are reserved",
        sku=sku,
        location=location,
        requested=quantity,
        reserved=current.reserved,
    )
