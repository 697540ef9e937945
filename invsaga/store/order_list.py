"""Reading orders: one order with the holds its shards record, and lists of orders, newest first.

A list is a keyset page over (created_at, order_id), the order of the indexes in ``core_004.sql``, so
each page is one index range scan however deep the cursor, and a page walk shows every order that
existed when it began exactly once, while new orders keep arriving (they sort before the cursor).
An order's holds are read from the ``reservations`` rows of its order id, on the shards its SKUs route
to, through their primary key (order_id, sku, location): one row per SKU and location, so a line split
across locations shows one hold per location it took units from.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from pydantic import BaseModel
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from invsaga.domain.errors import InvalidInput, OrderNotFound
from invsaga.domain.stock import Shortage
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.page_cursor import decode_cursor, encode_cursor

#: The ``orders.status`` check constraint, as a type.
OrderStatus = Literal["pending", "reserved", "paid", "confirmed", "rejected", "cancelled"]
ORDER_STATUSES: tuple[str, ...] = get_args(OrderStatus)

DEFAULT_PAGE = 50
MAX_PAGE = 500

_COLUMNS = "order_id, customer_id, status, amount, currency, lines, reason, shortages, created_at, updated_at"

_ORDER = text(f"SELECT {_COLUMNS} FROM orders WHERE order_id = :order_id")

_HOLDS = text(
    "SELECT sku, location, quantity, state, expires_at, created_at, updated_at FROM reservations"
    " WHERE order_id = :order_id AND sku = ANY (:skus) ORDER BY sku, location"
).bindparams(bindparam("skus", type_=ARRAY(Text)))


class OrderLine(BaseModel):
    sku: str
    quantity: int
    #: As the checkout asked for it; None when the line let the allocation choose.
    location: str | None = None


class Hold(BaseModel):
    """One reservation row: the units of one SKU one location holds (or held) for the order."""

    sku: str
    location: str
    quantity: int
    state: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


class OrderRecord(BaseModel):
    order_id: str
    customer_id: str
    status: str
    amount: Decimal
    currency: str
    lines: list[OrderLine]
    reason: str | None
    #: The short lines of an order refused for want of stock (recorded since core_007).
    shortages: list[Shortage] = []
    created_at: datetime
    updated_at: datetime


class OrderDetail(OrderRecord):
    holds: list[Hold]


class OrderPage(BaseModel):
    items: list[OrderRecord]
    #: Pass it back as ``cursor`` for the next (older) page; None on the last page.
    next_cursor: str | None


def _record(row: Any) -> OrderRecord:
    return OrderRecord(
        order_id=row.order_id,
        customer_id=row.customer_id,
        status=row.status,
        amount=row.amount,
        currency=row.currency,
        lines=[OrderLine.model_validate(line) for line in row.lines],
        reason=row.reason,
        shortages=row.shortages or [],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def check_page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
    return limit


def _order_cursor(cursor: str) -> tuple[datetime, str]:
    at, order_id = decode_cursor(cursor, str, str)
    try:
        created_at = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidInput("cursor: not a cursor this API returned") from None
    if created_at.tzinfo is None:
        raise InvalidInput("cursor: not a cursor this API returned")
    return in_utc(created_at, "cursor"), order_id


def in_utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC (naive means UTC), refused when that passes the calendar's first or last day."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{name}: {moment.isoformat()} is out of range") from None


def _list_statement(*, customer: bool, status: bool, since: bool, after: bool) -> Any:
    # Each filter is an equality on an index's leading column or a range on created_at, and the order
    # is the index's own, so the planner walks one index and stops after the page.
    conditions = []
    if customer:
        conditions.append("customer_id = :customer_id")
    if status:
        conditions.append("status = :status")
    if since:
        conditions.append("created_at >= :since")
    if after:
        conditions.append("(created_at, order_id) < (:after_at, :after_id)")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return text(f"SELECT {_COLUMNS} FROM orders{where} ORDER BY created_at DESC, order_id DESC LIMIT :limit")


def list_orders_sql(
    *, customer_id: str | None = None, status: str | None = None, since: bool = False, after: bool = False
) -> str:
    """The statement ``list_orders`` runs for these filters (for EXPLAIN in tests and benchmarks)."""
    return str(
        _list_statement(customer=customer_id is not None, status=status is not None, since=since, after=after)
    )


async def list_orders(
    databases: Databases,
    *,
    customer_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> OrderPage:
    """A page of orders, newest first, matching every filter given (``since``: created at or after)."""
    check_page_size(limit)
    if status is not None and status not in ORDER_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(ORDER_STATUSES)}, got {status!r}")
    if since is not None:
        since = in_utc(since, "since")
    params: dict[str, Any] = {
        "customer_id": customer_id,
        "status": status,
        "since": since,
        "limit": limit + 1,
    }
    if cursor is not None:
        params["after_at"], params["after_id"] = _order_cursor(cursor)
    statement = _list_statement(
        customer=customer_id is not None,
        status=status is not None,
        since=since is not None,
        after=cursor is not None,
    )
    async with unavailable_as("core database"), databases.core_autocommit.connect() as conn:
        rows = (await conn.execute(statement, {k: v for k, v in params.items() if v is not None})).all()
    items = [_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = items[-1] if items else None
    next_cursor = encode_cursor(last.created_at.isoformat(), last.order_id) if more and last else None
    return OrderPage(items=items, next_cursor=next_cursor)


async def get_order(databases: Databases, order_id: str) -> OrderDetail:
    """The order and the holds its shards record for it (all shards it touches read concurrently)."""
    async with unavailable_as("core database"), databases.core_autocommit.connect() as conn:
        row = (await conn.execute(_ORDER, {"order_id": order_id})).first()
    if row is None:
        raise OrderNotFound(f"no order {order_id!r}", order_id=order_id)
    record = _record(row)
    by_shard = databases.router.group_skus(dict.fromkeys(line.sku for line in record.lines))

    async def holds_on(shard: int, skus: list[str]) -> list[Hold]:
        engine = databases.shards_autocommit[shard]
        async with unavailable_as(shard_label(shard)), engine.connect() as conn:
            found = (await conn.execute(_HOLDS, {"order_id": order_id, "skus": skus})).all()
        return [Hold.model_validate(hold, from_attributes=True) for hold in found]

    per_shard = await asyncio.gather(*(holds_on(s, skus) for s, skus in by_shard.items()))
    holds = sorted((h for shard_holds in per_shard for h in shard_holds), key=lambda h: (h.sku, h.location))
    return OrderDetail(**record.model_dump(), holds=holds)
