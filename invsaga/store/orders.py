"""Orders in the core database: prices are read from the catalog here, and an order's status only moves on.

The amount charged is computed from catalog prices once, when the order is first prepared, and
recorded on the order row, so a retried or replayed checkout charges exactly what it first computed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import Text

from invsaga.domain.errors import InvalidInput
from invsaga.domain.stock import Shortage, StockLine
from invsaga.store.databases import unavailable_as

# Terminal statuses share the top rank: once there, an order never moves again.
STATUS_RANK = {"pending": 0, "reserved": 1, "paid": 2, "confirmed": 3, "rejected": 3, "cancelled": 3}

_PRICES = text("SELECT sku, price, currency, active FROM products WHERE sku = ANY (:skus)").bindparams(
    bindparam("skus", type_=ARRAY(Text))
)

_CREATE_ORDER = text(
    """
    INSERT INTO orders (order_id, customer_id, status, amount, currency, lines)
    VALUES (:order_id, :customer_id, 'pending', :amount, :currency, CAST(:lines AS jsonb))
    ON CONFLICT (order_id) DO NOTHING
    """
)

_ORDER = text(
    "SELECT order_id, customer_id, status, reason, shortages, amount, currency, lines"
    " FROM orders WHERE order_id = :id"
)

_ORDER_EXISTS = text("SELECT EXISTS (SELECT 1 FROM orders WHERE order_id = :id)")

_ADVANCE = text(
    """
    UPDATE orders SET status = :status, reason = :reason, shortages = CAST(:shortages AS jsonb),
           updated_at = now()
     WHERE order_id = :order_id
       AND (CASE status WHEN 'pending' THEN 0 WHEN 'reserved' THEN 1 WHEN 'paid' THEN 2 ELSE 3 END) < :rank
    RETURNING status
    """
)


class PricedOrder(BaseModel):
    order_id: str
    customer_id: str
    amount_minor: int
    currency: str
    status: str
    #: Why it ended, once it has (see ``advance_order``).
    reason: str | None = None
    shortages: list[Shortage] = []


def _to_minor(amount: Decimal) -> int:
    return int((amount * 100).to_integral_exact())


async def price_and_record_order(
    core: AsyncEngine, *, order_id: str, customer_id: str, currency: str, lines: Sequence[StockLine]
) -> PricedOrder:
    """Price the lines from the catalog and record the order, or return the order already recorded.

    Unknown or inactive products, and a currency the catalog does not price in, are refused before
    anything is written. Reusing an order id for different lines or another customer is refused too.
    """
    lines_json = json.dumps(
        [line.model_dump() for line in sorted(lines, key=lambda ln: ln.key)], sort_keys=True
    )
    async with unavailable_as("core database"), core.begin() as conn:
        rows = {r.sku: r for r in (await conn.execute(_PRICES, {"skus": [ln.sku for ln in lines]})).all()}
        problems = []
        for line in lines:
            row = rows.get(line.sku)
            if row is None:
                problems.append(f"unknown product {line.sku!r}")
            elif not row.active:
                problems.append(f"product {line.sku!r} is not for sale")
            elif row.currency != currency:
                problems.append(f"product {line.sku!r} is priced in {row.currency}, not {currency}")
        if problems:
            raise InvalidInput("; ".join(problems), order_id=order_id)
        amount = sum((rows[ln.sku].price * ln.quantity for ln in lines), Decimal(0))
        await conn.execute(
            _CREATE_ORDER,
            {
                "order_id": order_id,
                "customer_id": customer_id,
                "amount": amount,
                "currency": currency,
                "lines": lines_json,
            },
        )
        existing = (await conn.execute(_ORDER, {"id": order_id})).one()
    if existing.customer_id != customer_id or _canonical(existing.lines) != lines_json:
        raise InvalidInput(f"order id {order_id!r} is already used by a different order", order_id=order_id)
    return PricedOrder(
        order_id=order_id,
        customer_id=customer_id,
        amount_minor=_to_minor(existing.amount),
        currency=existing.currency,
        status=existing.status,
        reason=existing.reason,
        shortages=existing.shortages or [],
    )


def _canonical(lines: Any) -> str:
    return json.dumps(sorted(lines, key=lambda ln: (ln["sku"], ln["location"])), sort_keys=True)


async def order_exists(core: AsyncEngine, order_id: str) -> bool:
    """Whether a checkout has prepared this order (pass ``Databases.core_autocommit``)."""
    async with unavailable_as("core database"), core.connect() as conn:
        return bool(await conn.scalar(_ORDER_EXISTS, {"id": order_id}))


async def advance_order(
    core: AsyncEngine,
    order_id: str,
    status: str,
    reason: str | None = None,
    shortages: Sequence[Shortage] = (),
) -> str:
    """Move the order forward to ``status``, with why it ended and, refused for want of stock, its short
    lines; a replay or a step backwards changes nothing."""
    if status not in STATUS_RANK:
        raise InvalidInput(f"unknown order status {status!r}")
    async with unavailable_as("core database"), core.begin() as conn:
        moved = await conn.scalar(
            _ADVANCE,
            {
                "order_id": order_id,
                "status": status,
                "reason": reason,
                "shortages": json.dumps([s.model_dump() for s in shortages]) if shortages else None,
                "rank": STATUS_RANK[status],
            },
        )
        if moved is None:
            current = await conn.scalar(
                text("SELECT status FROM orders WHERE order_id = :id"), {"id": order_id}
            )
            if current is None:
                raise InvalidInput(f"no order {order_id!r}", order_id=order_id)
            return str(current)
    return str(moved)
