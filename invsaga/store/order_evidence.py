"""Read-only queries for the order reconciler: the core orders and every shard's holds, per order.

Each query is one plain SELECT on an autocommit connection: it takes no row lock and holds no
transaction open, so the reconciler can read live shards without slowing a checkout down. The reads are
not one snapshot across databases (nothing could be); the reconciler re-reads an order before it
reports it, once Temporal has said its checkout is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from invsaga.domain.errors import ShardUnavailable
from invsaga.domain.reconcile import OrderRow, ShardHolds
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.orders import _to_minor
from invsaga.store.slot_ownership import OWNED_HOLDS

#: Order ids per statement, so one array parameter stays a few hundred kilobytes at most.
CHUNK = 5_000
#: Reads of every shard's holds before giving up on a slot map that keeps changing under them.
_STABLE_READS = 5

_ORDER_COLUMNS = "SELECT order_id, status, amount, lines FROM orders"
_ORDERS_SINCE = text(f"{_ORDER_COLUMNS} WHERE created_at >= :cutoff")
_ALL_ORDERS = text(_ORDER_COLUMNS)
_ORDERS_BY_ID = text(f"{_ORDER_COLUMNS} WHERE order_id = ANY (:ids)").bindparams(
    bindparam("ids", type_=ARRAY(Text))
)

# Written as two halves so each is served by its partial index (due-for-expiry and pinned).
# Through OWNED_HOLDS: while a slot moves, its holds are counted on the shard that serves it only.
_HELD_ORDERS = text(
    f"SELECT order_id FROM {OWNED_HOLDS} r WHERE state = 'held' AND pinned_at IS NULL"
    f" UNION SELECT order_id FROM {OWNED_HOLDS} r WHERE state = 'held' AND pinned_at IS NOT NULL"
)

_FENCE_EPOCH = text("SELECT max(epoch) FROM slot_fences")

_HOLD_COUNTS = text(
    f"SELECT order_id, state, pinned_at IS NOT NULL AS pinned, count(*) AS lines FROM {OWNED_HOLDS} r"
    " WHERE order_id = ANY (:ids) GROUP BY order_id, state, pinned_at IS NOT NULL"
).bindparams(bindparam("ids", type_=ARRAY(Text)))


def _chunks(ids: Collection[str]) -> Iterator[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def _order_row(databases: Databases, row: Any) -> OrderRow:
    per_shard: dict[int, int] = {}
    for line in row.lines:
        shard = databases.router.shard_of(line["sku"])
        per_shard[shard] = per_shard.get(shard, 0) + 1
    return OrderRow(status=row.status, amount_minor=_to_minor(row.amount), lines_per_shard=per_shard)


async def orders_since(databases: Databases, cutoff: datetime | None) -> dict[str, OrderRow]:
    """Every order created at or after ``cutoff`` (every order when None)."""
    statement, params = (_ALL_ORDERS, {}) if cutoff is None else (_ORDERS_SINCE, {"cutoff": cutoff})
    async with unavailable_as("core database"), databases.core_autocommit.connect() as conn:
        rows = (await conn.execute(statement, params)).all()
    return {row.order_id: _order_row(databases, row) for row in rows}


async def orders_by_id(databases: Databases, ids: Collection[str]) -> dict[str, OrderRow]:
    found: dict[str, OrderRow] = {}
    async with unavailable_as("core database"), databases.core_autocommit.connect() as conn:
        for chunk in _chunks(ids):
            for row in (await conn.execute(_ORDERS_BY_ID, {"ids": chunk})).all():
                found[row.order_id] = _order_row(databases, row)
    return found


async def held_order_ids(databases: Databases) -> set[str]:
    """Every order with a held line on any shard, however old: a hold nobody frees is the finding."""

    async def one(index: int) -> list[str]:
        engine = databases.shards_autocommit[index]
        async with unavailable_as(shard_label(index)), engine.connect() as conn:
            return list((await conn.scalars(_HELD_ORDERS)).all())

    found = await asyncio.gather(*(one(i) for i in databases.serving()))
    return {order_id for ids in found for order_id in ids}


async def committed_lines(databases: Databases, order_id: str) -> int:
    """How many of the order's reservation lines are committed (sold), on every shard."""
    return sum(holds.committed for holds in (await holds_of(databases, [order_id])).get(order_id, []))


async def holds_of(databases: Databases, ids: Collection[str]) -> dict[str, list[ShardHolds]]:
    """The lines of each order on every shard, counted by state; orders without lines are absent.

    Each shard counts the slots it serves, but the shards are read one by one: a slot that flips in
    between can be read on its target before the flip and on its source after it, and its lines then
    count nowhere. An order confirmed in a lost workflow task would read as never sold. So the reads
    are repeated until no flip finished during them: the last step of a flip stamps the source's
    fence with the new epoch, so the highest epoch on the shards' fences grows with every flip.
    It is read on the shards, not the core: a cancel must be able to compensate with the core down."""
    for _ in range(_STABLE_READS):
        before = await _fence_epoch(databases)
        found = await _read_holds(databases, ids)
        if await _fence_epoch(databases) == before:
            return found
    raise ShardUnavailable(f"slots kept moving during each of {_STABLE_READS} reads of the holds; try again")


async def _fence_epoch(databases: Databases) -> int:
    """The highest slot-map epoch any serving shard's fences were stamped with."""

    async def one(index: int) -> int:
        engine = databases.shards_autocommit[index]
        async with unavailable_as(shard_label(index)), engine.connect() as conn:
            return int(await conn.scalar(_FENCE_EPOCH) or 0)

    return max(await asyncio.gather(*(one(i) for i in databases.serving())), default=0)


async def _read_holds(databases: Databases, ids: Collection[str]) -> dict[str, list[ShardHolds]]:
    found: Sequence[list[tuple[str, ShardHolds]]] = await asyncio.gather(
        *(holds_on(databases, i, ids) for i in databases.serving())
    )
    by_order: dict[str, list[ShardHolds]] = {}
    for shard_holds in found:
        for order_id, holds in shard_holds:
            by_order.setdefault(order_id, []).append(holds)
    for holds_list in by_order.values():
        holds_list.sort(key=lambda h: h.shard)
    return by_order


async def holds_on(databases: Databases, index: int, ids: Collection[str]) -> list[tuple[str, ShardHolds]]:
    """The lines of each order on one shard (of the slots it serves), counted by state."""
    per_order: dict[str, ShardHolds] = {}
    engine = databases.shards_autocommit[index]
    async with unavailable_as(shard_label(index)), engine.connect() as conn:
        for chunk in _chunks(ids):
            for row in (await conn.execute(_HOLD_COUNTS, {"ids": chunk})).all():
                holds = per_order.setdefault(row.order_id, ShardHolds(shard=index))
                field = "pinned" if row.state == "held" and row.pinned else row.state
                setattr(holds, field, getattr(holds, field) + int(row.lines))
    return list(per_order.items())
