"""An order id and an Idempotency-Key each stand for one order: a retry after a 503 attaches to the
checkout its first attempt started, and another cart under a used order id is refused."""

from __future__ import annotations

import uuid

import httpx

from invsaga.domain.stock import ReserveRequest, StockLine
from tests.helpers import assert_clean_audit, stocked_sku
from tests.integration.api_fixtures import (
    CHECKOUT,
    assert_problem,
    checkout_body,
    idempotency,
    wait_until_terminal,
    worker_serving,
)


async def test_a_retry_after_a_503_attaches_to_its_checkout_and_is_never_told_sold_out(
    api, store, databases, temporal_client, monkeypatch
):
    """Regression: the 503 released the key, so the retry was screened as new. The stock the screen saw
    was gone (held by another buyer at that moment), it answered 409 out-of-stock for the key, and the
    first attempt's checkout went on to charge and confirm once the stock came back."""
    from invsaga.api import checkouts
    from invsaga.api.app import create_app
    from invsaga.api.deps import ApiDeps
    from invsaga.api.sold_out import SoldOutScreen
    from invsaga.client import CheckoutClient
    from invsaga.store.sold_out import SoldOutHint

    monkeypatch.setattr(checkouts, "RESERVATION_TIMEOUT_SECONDS", 1.0)
    settings = api.settings.model_copy(update={"task_queue": f"idle-{uuid.uuid4()}"})
    # As in the API: the sold-out hint and the lock-free availability read screen new buyers.
    hint = SoldOutHint(settings.shard_urls)
    await hint.start()
    await hint.wait_listening()
    client = CheckoutClient(temporal_client, task_queue=settings.task_queue)
    screen = SoldOutScreen(client, hint, store)
    app = create_app(
        settings, deps=ApiDeps(databases=databases, store=store, checkouts=client, sold_out=screen)
    )
    sku = await stocked_sku(databases, store, 1)
    body = checkout_body((sku, 1))
    headers = {**CHECKOUT, **idempotency("retry-" + body["order_id"])}
    shard = store.router.shard_of(sku)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        first = await http.post("/v1/checkouts", json=body, headers=headers)
        assert_problem(first, 503, "unavailable")

        # Another buyer holds the only unit while the buyer retries.
        other = ReserveRequest(
            order_id=f"other-{uuid.uuid4().hex[:8]}", lines=[StockLine(sku=sku, quantity=1)]
        )
        await store.reserve(shard, other)
        retry = await http.post("/v1/checkouts", json=body, headers=headers)
        assert retry.status_code != 409, f"the retry was refused while its checkout lives: {retry.text}"
        assert_problem(retry, 503, "unavailable")
        await store.release(shard, other.order_id)

        async with worker_serving(temporal_client, settings):
            monkeypatch.setattr(checkouts, "RESERVATION_TIMEOUT_SECONDS", 30.0)
            last = await http.post("/v1/checkouts", json=body, headers=headers)
            assert last.status_code == 202, last.text
            result = await client.result(body["order_id"])
    await hint.close()
    assert result.status.value == "CONFIRMED"
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (0, 0)
    await assert_clean_audit(databases)


async def test_another_cart_under_a_used_order_id_is_refused_and_changes_nothing(http, api, store, databases):
    """Regression: a new cart under a used order id was answered with the first order's result."""
    mug = await stocked_sku(databases, store, 5)
    laptop = await stocked_sku(databases, store, 5)
    first = checkout_body((mug, 2))
    accepted = await http.post("/v1/checkouts", json=first, headers={**CHECKOUT, **idempotency()})
    assert accepted.status_code == 202, accepted.text
    assert (await wait_until_terminal(http, first["order_id"]))["status"] == "CONFIRMED"

    other_cart = {**first, "lines": [{"sku": laptop, "quantity": 1}]}
    refused = await http.post("/v1/checkouts", json=other_cart, headers={**CHECKOUT, **idempotency()})
    assert_problem(refused, 409, "order-id-reused")
    other_customer = {**first, "customer_id": "someone-else"}
    refused = await http.post("/v1/checkouts", json=other_customer, headers={**CHECKOUT, **idempotency()})
    assert_problem(refused, 409, "order-id-reused")

    [level] = await store.get(laptop)
    assert (level.on_hand, level.reserved) == (5, 0)
    same = await http.post("/v1/checkouts", json=first, headers={**CHECKOUT, **idempotency()})
    assert same.status_code == 202, same.text


async def test_another_cart_under_a_running_order_id_is_refused(http, api, store, databases):
    mug = await stocked_sku(databases, store, 5)
    slow = checkout_body((mug, 1), token="tok_slow_3000")
    assert (
        await http.post("/v1/checkouts", json=slow, headers={**CHECKOUT, **idempotency()})
    ).status_code == 202
    other_cart = {**slow, "lines": [{"sku": mug, "quantity": 3}]}
    refused = await http.post("/v1/checkouts", json=other_cart, headers={**CHECKOUT, **idempotency()})
    assert_problem(refused, 409, "order-id-reused")
    assert (await wait_until_terminal(http, slow["order_id"]))["status"] == "CONFIRMED"
    [level] = await store.get(mug)
    assert (level.on_hand, level.reserved) == (4, 0)
    await assert_clean_audit(databases)
