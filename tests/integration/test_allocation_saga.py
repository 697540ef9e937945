"""A checkout whose line names no location, end to end: a real worker, real shards, the sandbox payment
provider. The line is split over two locations; confirming commits exactly those rows, and an order that
ends otherwise releases every piece. The default rule applies: priority "main", then the rest by name."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from invsaga.domain.checkout import CheckoutLine, CheckoutRequest, CheckoutStatus, RejectReason
from invsaga.domain.stock import Allocation
from tests.helpers import assert_clean_audit, catalog, skus_on_shard, stock_up


def order(sku: str, quantity: int, *, token: str = "tok_success") -> CheckoutRequest:
    return CheckoutRequest(
        order_id=f"ord-{uuid.uuid4().hex[:12]}",
        customer_id="cust-alloc",
        lines=[CheckoutLine(sku=sku, quantity=quantity)],
        payment_token=token,
    )


async def two_locations(databases, store, main: int, east: int) -> str:
    (sku,) = skus_on_shard(store.router, 1, 1, prefix="SPLIT")
    await catalog(databases, store, (sku, main))
    await stock_up(store, sku, east, "east")
    return sku


async def stock(store, sku: str) -> dict[str, tuple[int, int]]:
    return {lv.location: (lv.on_hand, lv.reserved) for lv in await store.get(sku)}


async def holds(databases, store, sku: str, order_id: str) -> set[tuple[str, int, str]]:
    async with databases.shards[store.router.shard_of(sku)].connect() as conn:
        rows = await conn.execute(
            text("SELECT location, quantity, state FROM reservations WHERE order_id = :id"), {"id": order_id}
        )
        return {(r.location, r.quantity, r.state) for r in rows}


async def test_a_split_line_is_confirmed_and_commits_exactly_its_pieces(saga, store, databases):
    sku = await two_locations(databases, store, main=2, east=3)
    request = order(sku, 4)
    pieces = [
        Allocation(sku=sku, location="east", quantity=2),
        Allocation(sku=sku, location="main", quantity=2),
    ]

    reservation = await saga.start(request)
    assert reservation.held and reservation.allocations == pieces
    result = await saga.result(request.order_id)

    assert result.status is CheckoutStatus.CONFIRMED and result.allocations == pieces
    assert result.amount_minor == 4 * 1250
    assert await stock(store, sku) == {"east": (1, 0), "main": (0, 0)}
    assert await holds(databases, store, sku, request.order_id) == {
        ("east", 2, "committed"),
        ("main", 2, "committed"),
    }
    assert (await saga.status(request.order_id)).allocations == pieces
    await assert_clean_audit(databases)


@pytest.mark.parametrize("how", ["declined", "cancelled"])
async def test_a_split_order_that_does_not_go_through_releases_every_piece(saga, store, databases, how):
    sku = await two_locations(databases, store, main=1, east=4)
    request = order(sku, 5, token="tok_decline" if how == "declined" else "tok_slow_800")

    reservation = await saga.start(request)
    assert reservation.held and {(a.location, a.quantity) for a in reservation.allocations} == {
        ("main", 1),
        ("east", 4),
    }
    if how == "cancelled":
        assert (await saga.cancel(request.order_id, "changed my mind")).accepted
    result = await saga.result(request.order_id)

    if how == "declined":
        assert result.status is CheckoutStatus.REJECTED and result.reason is RejectReason.PAYMENT_DECLINED
    else:
        assert result.status is CheckoutStatus.CANCELLED
    assert await stock(store, sku) == {"east": (4, 0), "main": (1, 0)}
    assert await holds(databases, store, sku, request.order_id) == {
        ("east", 4, "released"),
        ("main", 1, "released"),
    }
    await assert_clean_audit(databases)


async def test_more_than_every_location_holds_is_out_of_stock_with_the_total(saga, store, databases):
    sku = await two_locations(databases, store, main=1, east=1)
    request = order(sku, 3)
    reservation = await saga.start(request)
    assert not reservation.held and reservation.reason is RejectReason.OUT_OF_STOCK
    assert [(s.sku, s.location, s.requested, s.available) for s in reservation.shortages] == [
        (sku, None, 3, 2)
    ]
    assert await stock(store, sku) == {"east": (1, 0), "main": (1, 0)}
    await assert_clean_audit(databases)
