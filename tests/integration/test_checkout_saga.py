"""Every path through the checkout saga against a real Temporal dev server, real shards and the real
sandbox payment provider."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text

from invsaga.domain.checkout import WORKFLOW_TYPE, CheckoutLine, CheckoutRequest, CheckoutStatus, RejectReason
from invsaga.domain.errors import InvalidInput
from tests.helpers import assert_clean_audit, catalog, keep_history, skus_on_shard, stocked_sku


def order(
    *lines: tuple[str, int], token: str = "tok_success", order_id: str | None = None
) -> CheckoutRequest:
    return CheckoutRequest(
        order_id=order_id or f"ord-{uuid.uuid4().hex[:12]}",
        customer_id="cust-1",
        lines=[CheckoutLine(sku=s, quantity=q) for s, q in lines],
        payment_token=token,
    )


async def charges_for(payment_sandbox, order_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=payment_sandbox.url) as http:
        response = await http.get("/v1/charges", params={"idempotency_key": f"charge-{order_id}"})
    return [] if response.status_code == 404 else [response.json()]


async def levels(store, *skus):
    found = await store.get_many(list(skus))
    return {sku: (found[sku][0].on_hand, found[sku][0].reserved) for sku in skus}


async def order_status(databases, order_id: str) -> str | None:
    async with databases.core.connect() as conn:
        return await conn.scalar(text("SELECT status FROM orders WHERE order_id = :id"), {"id": order_id})


async def test_happy_path_across_shards(saga, store, databases, payment_sandbox):
    (a,) = skus_on_shard(store.router, 0, 1)
    (b,) = skus_on_shard(store.router, 1, 1)
    await catalog(databases, store, (a, 10), (b, 10))
    request = order((a, 2), (b, 3))
    reservation = await saga.start(request)
    assert reservation.held
    result = await saga.result(request.order_id)
    assert result.status is CheckoutStatus.CONFIRMED
    assert result.amount_minor == 5 * 1250
    assert await levels(store, a, b) == {a: (8, 0), b: (7, 0)}
    [charge] = await charges_for(payment_sandbox, request.order_id)
    assert (charge["status"], charge["amount"], charge["refunded_amount"]) == ("succeeded", 6250, 0)
    assert await order_status(databases, request.order_id) == "confirmed"
    view = await saga.status(request.order_id)
    assert view.status is CheckoutStatus.CONFIRMED and view.charge_id == charge["id"]
    await keep_history(saga, request.order_id, "confirmed_two_shards")
    await assert_clean_audit(databases)


async def test_out_of_stock_on_one_shard_releases_the_others(saga, store, databases, payment_sandbox):
    (a,) = skus_on_shard(store.router, 0, 1)
    (b,) = skus_on_shard(store.router, 1, 1)
    await catalog(databases, store, (a, 10), (b, 1))
    request = order((a, 2), (b, 3))
    reservation = await saga.start(request)
    assert not reservation.held and reservation.reason is RejectReason.OUT_OF_STOCK
    assert [(s.sku, s.requested, s.available) for s in reservation.shortages] == [(b, 3, 1)]
    result = await saga.result(request.order_id)
    assert result.status is CheckoutStatus.REJECTED and result.reason is RejectReason.OUT_OF_STOCK
    assert await levels(store, a, b) == {a: (10, 0), b: (1, 0)}
    assert await charges_for(payment_sandbox, request.order_id) == []
    assert await order_status(databases, request.order_id) == "rejected"
    await keep_history(saga, request.order_id, "rejected_out_of_stock")
    await assert_clean_audit(databases)


async def test_declined_payment_releases_everything(saga, store, databases, payment_sandbox):
    a = await stocked_sku(databases, store, 5)
    request = order((a, 2), token="tok_decline")
    result = await saga.checkout(request)
    assert result.status is CheckoutStatus.REJECTED and result.reason is RejectReason.PAYMENT_DECLINED
    assert await levels(store, a) == {a: (5, 0)}
    [charge] = await charges_for(payment_sandbox, request.order_id)
    assert charge["status"] == "declined"
    await keep_history(saga, request.order_id, "rejected_payment_declined")
    await assert_clean_audit(databases)


@pytest.mark.parametrize(
    ("token", "shard", "history"),
    [
        pytest.param("tok_flaky_2", 1, "confirmed_flaky_payment", id="flaky"),
        # Answers after the client's 1 s timeout, so the first attempt cannot tell whether it charged.
        pytest.param("tok_slow_1500", 0, "confirmed_unknown_payment_outcome", id="unknown-outcome"),
    ],
)
async def test_a_charge_retried_after_a_failure_or_a_timeout_is_made_exactly_once(
    saga, store, databases, payment_sandbox, token, shard, history
):
    a = await stocked_sku(databases, store, 5, shard=shard)
    request = order((a, 1), token=token)
    result = await saga.checkout(request)
    assert result.status is CheckoutStatus.CONFIRMED
    [charge] = await charges_for(payment_sandbox, request.order_id)
    assert charge["status"] == "succeeded" and charge["id"] == result.charge_id
    assert await levels(store, a) == {a: (4, 0)}
    await keep_history(saga, request.order_id, history)
    await assert_clean_audit(databases)


@pytest.mark.parametrize(
    ("how", "history"),
    [("update", "cancelled_by_update"), ("workflow", "cancelled_workflow")],
)
async def test_a_cancel_during_payment_releases_and_refunds(
    saga, store, databases, payment_sandbox, how, history
):
    """Cancelled by the checkout's cancel update, or by cancelling its workflow: the compensations run."""
    a = await stocked_sku(databases, store, 5, shard=1)
    request = order((a, 2), token="tok_slow_800")
    assert (await saga.start(request)).held
    if how == "update":
        assert (await saga.cancel(request.order_id, "buyer changed their mind")).accepted
    else:
        await saga.handle(request.order_id).cancel()
    result = await saga.result(request.order_id)
    assert result.status is CheckoutStatus.CANCELLED
    [charge] = await charges_for(payment_sandbox, request.order_id)
    assert charge["refunded_amount"] == charge["amount"] == 2500
    assert await levels(store, a) == {a: (5, 0)}
    assert await order_status(databases, request.order_id) == "cancelled"
    await keep_history(saga, request.order_id, history)
    await assert_clean_audit(databases)


async def test_duplicate_start_gives_one_workflow_and_one_charge(saga, store, databases, payment_sandbox):
    a = await stocked_sku(databases, store, 5)
    request = order((a, 1))
    views = await asyncio.gather(*(saga.start(request) for _ in range(5)))
    assert all(v.held for v in views)
    first = await saga.result(request.order_id)
    again = await saga.start(request)
    assert again.held and again.status is CheckoutStatus.CONFIRMED
    assert (await saga.result(request.order_id)) == first
    [charge] = await charges_for(payment_sandbox, request.order_id)
    assert charge["id"] == first.charge_id
    assert await levels(store, a) == {a: (4, 0)}
    await assert_clean_audit(databases)


@pytest.mark.parametrize(
    "bad",
    [
        {"lines": []},
        {"lines": [CheckoutLine(sku="X", quantity=0)]},
        {"payment_token": ""},
        {"lines": [CheckoutLine(sku="X", quantity=1), CheckoutLine(sku="X", quantity=2)]},
    ],
    ids=["no-lines", "zero-quantity", "no-token", "duplicate-line"],
)
async def test_bad_input_is_refused_before_anything_starts(saga, store, databases, bad):
    request = order(("X", 1)).model_copy(update=bad)
    with pytest.raises(InvalidInput):
        await saga.start(request)
    assert await order_status(databases, request.order_id) is None


async def test_bad_input_reaching_the_workflow_is_rejected_before_stock_moves(saga, store, databases):
    a = await stocked_sku(databases, store, 5)
    unknown = order((a, 1), ("NOT-IN-CATALOG", 1))
    result = await saga.checkout(unknown)
    assert result.status is CheckoutStatus.REJECTED and result.reason is RejectReason.INVALID
    assert "NOT-IN-CATALOG" in (result.detail or "")
    invalid = order((a, 0))  # skip client validation: start the workflow directly
    await saga.client.start_workflow(
        WORKFLOW_TYPE, invalid, id=f"checkout-{invalid.order_id}", task_queue=saga.task_queue
    )
    result = await saga.result(invalid.order_id)
    assert result.status is CheckoutStatus.REJECTED and result.reason is RejectReason.INVALID
    assert await levels(store, a) == {a: (5, 0)}
    async with databases.shards[0].connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM reservations")) == 0
    await keep_history(saga, invalid.order_id, "rejected_invalid")
    await assert_clean_audit(databases)


async def test_two_hundred_buyers_for_fifty_units(saga, store, databases):
    a = await stocked_sku(databases, store, 50, prefix="RUSH")
    requests = [order((a, 1)) for _ in range(200)]
    results = await asyncio.gather(*(saga.checkout(r) for r in requests))
    statuses = [r.status for r in results]
    assert statuses.count(CheckoutStatus.CONFIRMED) == 50
    assert statuses.count(CheckoutStatus.REJECTED) == 150
    assert all(r.reason is RejectReason.OUT_OF_STOCK for r in results if r.status is CheckoutStatus.REJECTED)
    assert await levels(store, a) == {a: (0, 0)}
    report = await assert_clean_audit(databases)
    assert sum(s.held_reservations for s in report.shards) == 0
