"""Operator reads of stock: one SKU's ledger, newest first, and the stock rows running low.

A SKU's history is a keyset page over ``stock_movements`` by id on its shard, through the index of
``shard_005.sql``. Ids come from a sequence, so newest first means the order the movements were
written in; a movement committed while someone pages may land on a page already read (a later walk
shows it), never twice.

Low stock is per location: a row of (sku, location) whose available stock (on_hand - reserved) is under
the threshold, the level at which one warehouse reorders. Each shard is scanned (concurrently) and the
pages are merged in (sku, location) order. There is deliberately no index for it: every reserve updates
its stock row, and an index on available stock (an expression over on_hand and reserved) would turn
those HOT updates into index writes on the hottest path, for an occasional operator query.
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text

from invsaga.domain.errors import InvalidInput, UnknownSku
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.order_list import DEFAULT_PAGE, check_page_size
from invsaga.store.page_cursor import decode_cursor, encode_cursor
from invsaga.store.slot_ownership import OWNED_STOCK
from invsaga.store.stock_csv import MAX_QUANTITY

_MOVEMENT_COLUMNS = "id, sku, location, delta_on_hand, delta_reserved, reason, reference, created_at"


class Movement(BaseModel):
    id: int
    sku: str
    location: str
    delta_on_hand: int
    delta_reserved: int
    reason: str
    reference: str
    created_at: datetime


class MovementPage(BaseModel):
    items: list[Movement]
    #: Pass it back as ``cursor`` for the next (older) page; None on the last page.
    next_cursor: str | None


class LowStock(BaseModel):
    sku: str
    location: str
    on_hand: int
    reserved: int
    available: int


class LowStockPage(BaseModel):
    items: list[LowStock]
    next_cursor: str | None


def _movements_statement(*, location: bool, after: bool) -> Any:
    conditions = ["sku = :sku"]
    if location:
        conditions.append("location = :location")
    if after:
        conditions.append("id < :after")
    return text(
        f"SELECT {_MOVEMENT_COLUMNS} FROM stock_movements WHERE {' AND '.join(conditions)}"
        " ORDER BY id DESC LIMIT :limit"
    )


async def stock_movements(
    databases: Databases,
    sku: str,
    *,
    location: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> MovementPage:
    """A page of the SKU's ledger (at one location, if given), newest first.

    A first page with nothing on it is ``UnknownSku``: every stock row's creation is in its ledger, so
    a SKU with no movement has never had stock (there).
    """
    check_page_size(limit)
    params: dict[str, Any] = {"sku": sku, "limit": limit + 1}
    if location is not None:
        params["location"] = location
    if cursor is not None:
        (params["after"],) = decode_cursor(cursor, int)
    shard = databases.router.shard_of(sku)
    statement = _movements_statement(location=location is not None, after=cursor is not None)
    async with unavailable_as(shard_label(shard)), databases.shards_autocommit[shard].connect() as conn:
        rows = (await conn.execute(statement, params)).all()
    if not rows and cursor is None:
        where = f" at location {location!r}" if location is not None else ""
        raise UnknownSku(
            f"unknown sku {sku!r}{where}: no stock movement recorded", sku=sku, location=location
        )
    items = [Movement.model_validate(row, from_attributes=True) for row in rows[:limit]]
    more = len(rows) > limit
    return MovementPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


# Compared and sorted byte-wise (COLLATE "C"), the order Python's merge of the shards' pages uses:
# under a linguistic collation the shards' orders and the cursor would disagree with the merge. Through
# OWNED_STOCK: while a slot moves, its rows are listed from the shard that serves it only.
_LOW_STOCK = (
    "SELECT sku, location, on_hand, reserved, on_hand - reserved AS available"
    f" FROM {OWNED_STOCK} s"
    " WHERE on_hand - reserved < :below{after}"
    ' ORDER BY sku COLLATE "C", location COLLATE "C" LIMIT :limit'
)
_LOW_STOCK_FIRST = text(_LOW_STOCK.format(after=""))
_LOW_STOCK_AFTER = text(
    _LOW_STOCK.format(after=' AND (sku COLLATE "C", location COLLATE "C") > (:after_sku, :after_location)')
)


def check_threshold(below: int) -> int:
    if not 1 <= below <= MAX_QUANTITY:
        raise InvalidInput(f"below must be from 1 to {MAX_QUANTITY}, got {below}")
    return below


async def low_stock(
    databases: Databases, below: int, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
) -> LowStockPage:
    """A page of every shard's stock rows with fewer than ``below`` units available, by (sku, location)."""
    check_threshold(below)
    check_page_size(limit)
    params: dict[str, Any] = {"below": below, "limit": limit + 1}
    statement = _LOW_STOCK_FIRST
    if cursor is not None:
        params["after_sku"], params["after_location"] = decode_cursor(cursor, str, str)
        statement = _LOW_STOCK_AFTER

    async def one(shard: int) -> list[LowStock]:
        async with unavailable_as(shard_label(shard)), databases.shards_autocommit[shard].connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [LowStock.model_validate(row, from_attributes=True) for row in rows]

    # Each shard's first limit + 1 rows after the cursor hold its share of the merged page and tell
    # whether anything follows it. A SKU lives on one shard, so the keys never tie across shards.
    per_shard = await asyncio.gather(*(one(s) for s in databases.serving()))
    merged = list(heapq.merge(*per_shard, key=lambda row: (row.sku, row.location)))
    items = merged[:limit]
    more = len(merged) > limit
    next_cursor = encode_cursor(items[-1].sku, items[-1].location) if more else None
    return LowStockPage(items=items, next_cursor=next_cursor)
