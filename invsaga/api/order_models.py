"""What the order and stock-history routes answer: orders with their holds, ledger pages, low stock.

Each answer is built from the store's read model with ``of``, so the store's names stay the API's.
"""

from __future__ import annotations

from datetime import datetime

from invsaga.api.models import Answer, checkout_path
from invsaga.domain.stock import Shortage
from invsaga.store.order_list import OrderDetail, OrderPage, OrderRecord
from invsaga.store.stock_history import LowStockPage, MovementPage


def order_path(order_id: str) -> str:
    return f"/v1/orders/{order_id}"


class OrderLineView(Answer):
    sku: str
    quantity: int
    #: The location the checkout named; null when it let the allocation choose (see `holds`).
    location: str | None


class HoldView(Answer):
    """One reservation row on the SKU's shard: units held (or once held) at one location."""

    sku: str
    location: str
    quantity: int
    #: held, committed, released or expired
    state: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


class OrderLinks(Answer):
    self: str
    #: The order's checkout: its live state, and where to cancel it.
    checkout: str


class OrderView(Answer):
    order_id: str
    customer_id: str
    #: pending, reserved, paid, confirmed, rejected or cancelled
    status: str
    #: A decimal string in `currency`, as priced when the order was first recorded.
    amount: str
    currency: str
    reason: str | None
    #: The lines that were short, for an order rejected out_of_stock; empty otherwise.
    shortages: list[Shortage]
    created_at: datetime
    updated_at: datetime
    lines: list[OrderLineView]
    links: OrderLinks

    @classmethod
    def fields_of(cls, order: OrderRecord) -> dict[str, object]:
        return {
            **order.model_dump(include=set(OrderRecord.model_fields) - {"amount", "lines"}),
            "amount": str(order.amount),
            "lines": [OrderLineView(**line.model_dump()) for line in order.lines],
            "links": OrderLinks(self=order_path(order.order_id), checkout=checkout_path(order.order_id)),
        }

    @classmethod
    def of(cls, order: OrderRecord) -> OrderView:
        return cls(**cls.fields_of(order))


class OrderDetailView(OrderView):
    #: The order's reservation rows on the shards, by sku and location: a line split across locations
    #: has one hold per location it took units from.
    holds: list[HoldView]

    @classmethod
    def of_detail(cls, order: OrderDetail) -> OrderDetailView:
        holds = [HoldView(**hold.model_dump()) for hold in order.holds]
        return cls(**cls.fields_of(order), holds=holds)


class OrderList(Answer):
    items: list[OrderView]
    #: Send it back as `cursor` for the next, older page; null on the last page.
    next_cursor: str | None

    @classmethod
    def of(cls, page: OrderPage) -> OrderList:
        return cls(items=[OrderView.of(order) for order in page.items], next_cursor=page.next_cursor)


class MovementView(Answer):
    """One ledger row: how far a change moved on_hand and reserved, why, and under which reference."""

    id: int
    sku: str
    location: str
    delta_on_hand: int
    delta_reserved: int
    #: receive, adjust, import, reserve, release, commit or expire
    reason: str
    #: The order id of a hold's movements, the caller's reference of a receipt or a set.
    reference: str
    created_at: datetime


class MovementList(Answer):
    items: list[MovementView]
    #: Send it back as `cursor` for the next, older page; null on the last page.
    next_cursor: str | None

    @classmethod
    def of(cls, page: MovementPage) -> MovementList:
        return cls(items=[MovementView(**m.model_dump()) for m in page.items], next_cursor=page.next_cursor)


class LowStockView(Answer):
    sku: str
    location: str
    on_hand: int
    reserved: int
    available: int


class LowStockList(Answer):
    """Stock rows (one per SKU and location) with less available than `below`, by sku and location."""

    items: list[LowStockView]
    #: Send it back as `cursor` (with the same `below`) for the next page; null on the last page.
    next_cursor: str | None

    @classmethod
    def of(cls, page: LowStockPage) -> LowStockList:
        return cls(
            items=[LowStockView(**row.model_dump()) for row in page.items], next_cursor=page.next_cursor
        )
