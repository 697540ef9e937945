"""Orders as the core database records them: a list, newest first, and one order with its holds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from invsaga.api.auth import AUTH_ERRORS, Reader
from invsaga.api.deps import Deps
from invsaga.api.models import PathOrderCode
from invsaga.api.order_models import OrderDetailView, OrderList
from invsaga.api.problems import problem_responses
from invsaga.domain.errors import InvalidInput, OrderNotFound, ShardUnavailable
from invsaga.domain.stock import CustomerId
from invsaga.store.order_list import DEFAULT_PAGE, MAX_PAGE, OrderStatus, get_order, list_orders
from invsaga.store.page_cursor import MAX_CURSOR_LENGTH

router = APIRouter(prefix="/v1/orders", tags=["orders"])


Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="The `next_cursor` of the previous page."),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Most items on the page.")]


@router.get(
    "",
    summary="List orders",
    response_model=OrderList,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, ShardUnavailable),
)
async def get_orders(
    deps: Deps,
    _: Reader,
    customer_id: Annotated[CustomerId | None, Query(description="Only this customer's orders.")] = None,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
    since: Annotated[
        datetime | None,
        Query(description="Only orders created at or after this instant (RFC 3339; no offset means UTC)."),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> OrderList:
    """Orders newest first, matching every filter given. Follow `next_cursor` until it is null: a walk
    shows every order that existed when it began exactly once, however many are created meanwhile."""
    page = await list_orders(
        deps.databases, customer_id=customer_id, status=status, since=since, cursor=cursor, limit=limit
    )
    return OrderList.of(page)


@router.get(
    "/{order_id}",
    summary="Read one order",
    response_model=OrderDetailView,
    responses=problem_responses(InvalidInput, *AUTH_ERRORS, OrderNotFound, ShardUnavailable),
)
async def get_one_order(
    order_id: Annotated[PathOrderCode, Path(description="The order id.", examples=["ord-1001"])],
    deps: Deps,
    _: Reader,
) -> OrderDetailView:
    """The order's lines, amount, status and reason, a link to its checkout, and its holds as the shards
    record them (one per SKU and location)."""
    return OrderDetailView.of_detail(await get_order(deps.databases, order_id))
