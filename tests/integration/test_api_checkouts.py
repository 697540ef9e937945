"""POST /v1/checkouts, GET /v1/checkouts/{order_id} and POST .../cancel over real HTTP, with a real worker,
real shards and the sandbox payment provider."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from temporalio.service import RPCError, RPCStatusCode

from invsaga.domain.checkout import workflow_id_for
from tests.helpers import assert_clean_audit, stocked_sku
from tests.integration.api_fixtures import (
    CHECKOUT,
    assert_problem,
    checkout_body,
    idempotency,
    wait_until_terminal,
)


async def levels(store, sku: str) -> tuple[int, int]:
    [level] = await store.get(sku)
    return level.on_hand, level.reserved


async def workflow_exists(temporal, order_id: str) -> bool:
    try:
        await temporal.get_workflow_handle(workflow_id_for(order_id)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def order_row(databases, order_id: str):
    async with databases.core.connect() as conn:
        return await conn.scalar(text("SELECT status FROM orders WHERE order_id = :id"), {"id": order_id})


async def post(http, body, key=None):
    return await http.post("/v1/checkouts", json=body, headers={**CHECKOUT, **idempotency(key)})


async def test_held_stock_is_202_with_a_link_to_follow_until_confirmed(http, api, store, databases):
    sku = await stocked_sku(databases, store, 10)
    body = checkout_body((sku, 3))

    response = await post(http, body)

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["order_id"] == body["order_id"] and accepted["held"] is True
    assert accepted["links"]["self"] == response.headers["location"] == f"/v1/checkouts/{body['order_id']}"
    state = await wait_until_terminal(http, body["order_id"])
    assert state["status"] == "CONFIRMED" and state["reason"] is None
    assert state["customer_id"] == body["customer_id"]
    assert state["amount_minor"] == 3 * 1250 and state["currency"] == "USD" and state["charge_id"]
    assert await levels(store, sku) == (7, 0)
    await assert_clean_audit(databases)


async def test_the_live_status_shows_a_running_checkout(http, store, databases):
    sku = await stocked_sku(databases, store, 5, shard=1)
    body = checkout_body((sku, 1), token="tok_slow_2500")
    assert (await post(http, body)).status_code == 202

    live = (await http.get(f"/v1/checkouts/{body['order_id']}", headers=CHECKOUT)).json()

    assert live["terminal"] is False and live["status"] in ("PAYING", "CONFIRMING")
    assert live["customer_id"] == body["customer_id"]
    final = await wait_until_terminal(http, body["order_id"])
    assert final["status"] == "CONFIRMED"


async def test_out_of_stock_is_409_with_the_short_lines_and_holds_nothing(http, store, databases):
    sku = await stocked_sku(databases, store, 1)
    body = checkout_body((sku, 3))

    response = await post(http, body)

    problem = assert_problem(response, 409, "out-of-stock")
    assert problem["shortages"] == [{"sku": sku, "location": "main", "requested": 3, "available": 1}]
    assert problem["order_id"] == body["order_id"]
    assert await levels(store, sku) == (1, 0)
    # The database already said there is not enough: the answer came without starting a checkout.
    assert problem["fast_path"] is True
    follow = await http.get(f"/v1/checkouts/{body['order_id']}", headers=CHECKOUT)
    assert follow.status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"lines": []},
        {"lines": [{"sku": "MUG", "quantity": 0}]},
        {"lines": [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}]},
        {"lines": [{"sku": "bad sku", "quantity": 1}]},
        {"payment_token": ""},
        {"currency": "usd"},
        {"order_id": "x" * 101},
        {"unexpected": "field"},
        {"lines": [{"sku": "MUG", "quantity": "1"}]},
    ],
    ids=lambda change: ",".join(change),
)
async def test_invalid_input_is_422_and_starts_nothing(http, api, databases, change):
    body = {**checkout_body(("MUG", 1)), **change}
    if "order_id" in change:
        body["order_id"] = change["order_id"]

    response = await post(http, body)

    problem = assert_problem(response, 422, "invalid-input")
    assert problem["errors"], problem
    assert not await workflow_exists(api.temporal, body["order_id"])
    assert await order_row(databases, body["order_id"]) is None


async def test_an_order_id_has_one_rule_in_the_body_and_the_path(http, api, store, databases):
    sku = await stocked_sku(databases, store, 5)
    slashed = checkout_body((sku, 1), order_id=f"ord/{uuid.uuid4().hex[:8]}")

    problem = assert_problem(await post(http, slashed), 422, "invalid-input")

    assert [e["loc"] for e in problem["errors"]] == [["body", "order_id"]]
    assert not await workflow_exists(api.temporal, slashed["order_id"])
    assert await order_row(databases, slashed["order_id"]) is None
    assert await levels(store, sku) == (5, 0)
    # Whatever the body accepts, the path can follow.
    dotted = checkout_body((sku, 1), order_id=f"ord:{uuid.uuid4().hex[:8]}.a-1")
    assert (await post(http, dotted)).status_code == 202
    assert (await wait_until_terminal(http, dotted["order_id"]))["status"] == "CONFIRMED"


async def test_malformed_json_is_422_not_500(http):
    response = await http.post(
        "/v1/checkouts",
        content=b'{"order_id": "ord-1", "lines": [',
        headers={**CHECKOUT, **idempotency(), "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "invalid-input")


async def test_a_product_the_catalog_does_not_sell_is_422(http, store, databases):
    body = checkout_body(("NOT-IN-CATALOG-1", 1))
    problem = assert_problem(await post(http, body), 422, "invalid-input")
    assert "NOT-IN-CATALOG-1" in problem["detail"]
    assert await levels_or_none(store, "NOT-IN-CATALOG-1") is None


async def levels_or_none(store, sku):
    return (await store.get_many([sku])).get(sku)


async def test_without_an_idempotency_key_it_is_400_and_starts_nothing(http, api):
    body = checkout_body(("MUG", 1))
    response = await http.post("/v1/checkouts", json=body, headers=CHECKOUT)
    assert_problem(response, 400, "idempotency-key-required")
    assert not await workflow_exists(api.temporal, body["order_id"])


async def test_an_unknown_order_is_404_to_follow_and_to_cancel(http):
    assert_problem(await http.get("/v1/checkouts/ord-never-was", headers=CHECKOUT), 404, "checkout-not-found")
    response = await http.post("/v1/checkouts/ord-never-was/cancel", headers=CHECKOUT)
    assert_problem(response, 404, "checkout-not-found")


async def test_cancel_is_202_then_the_checkout_releases_and_refunds(http, store, databases):
    sku = await stocked_sku(databases, store, 5, shard=1)
    body = checkout_body((sku, 2), token="tok_slow_1500")
    assert (await post(http, body)).status_code == 202

    response = await http.post(
        f"/v1/checkouts/{body['order_id']}/cancel", json={"reason": "changed my mind"}, headers=CHECKOUT
    )

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] is True and response.json()["order_id"] == body["order_id"]
    state = await wait_until_terminal(http, body["order_id"])
    assert state["status"] == "CANCELLED"
    assert await levels(store, sku) == (5, 0)
    assert await order_row(databases, body["order_id"]) == "cancelled"


async def test_cancel_once_confirmed_is_409_too_late(http, store, databases):
    sku = await stocked_sku(databases, store, 5)
    body = checkout_body((sku, 1))
    assert (await post(http, body)).status_code == 202
    assert (await wait_until_terminal(http, body["order_id"]))["status"] == "CONFIRMED"

    response = await http.post(f"/v1/checkouts/{body['order_id']}/cancel", headers=CHECKOUT)

    assert_problem(response, 409, "too-late-to-cancel")
    assert await levels(store, sku) == (4, 0)


async def test_a_cancel_body_must_be_valid(http):
    response = await http.post(
        "/v1/checkouts/ord-x/cancel",
        content=b"{not json",
        headers={**CHECKOUT, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "invalid-input")
    response = await http.post("/v1/checkouts/ord-x/cancel", json={"reason": "r" * 501}, headers=CHECKOUT)
    assert_problem(response, 422, "invalid-input")


async def test_checkouts_for_two_shards_in_parallel(http, store, databases):
    a = await stocked_sku(databases, store, 4, shard=0)
    b = await stocked_sku(databases, store, 4, shard=1)
    bodies = [checkout_body((a, 1), (b, 1)) for _ in range(4)]
    responses = await asyncio.gather(*(post(http, body) for body in bodies))
    assert [r.status_code for r in responses] == [202] * 4
    states = await asyncio.gather(*(wait_until_terminal(http, body["order_id"]) for body in bodies))
    assert {s["status"] for s in states} == {"CONFIRMED"}
    assert (await levels(store, a), await levels(store, b)) == ((0, 0), (0, 0))


async def test_cancel_keeps_its_reason_and_cancelling_again_is_the_same_success(http, store, databases):
    sku = await stocked_sku(databases, store, 5, shard=1)
    body = checkout_body((sku, 2), token="tok_slow_1500")
    assert (await post(http, body)).status_code == 202
    cancel_path = f"/v1/checkouts/{body['order_id']}/cancel"

    # Racing cancels of one checkout: each is accepted, and the stock is released exactly once.
    racing = await asyncio.gather(
        *(http.post(cancel_path, json={"reason": "changed my mind"}, headers=CHECKOUT) for _ in range(4))
    )

    assert [r.status_code for r in racing] == [202] * 4, [r.text for r in racing]
    assert all(r.json()["accepted"] and r.json()["reason"] == "changed my mind" for r in racing)
    state = await wait_until_terminal(http, body["order_id"])
    assert (state["status"], state["detail"]) == ("CANCELLED", "changed my mind")
    assert state["charged"] is False
    again = await http.post(cancel_path, json={"reason": "still no"}, headers=CHECKOUT)
    assert again.status_code == 202, again.text
    assert (again.json()["accepted"], again.json()["status"]) == (True, "CANCELLED")
    assert await levels(store, sku) == (5, 0)
    assert await order_row(databases, body["order_id"]) == "cancelled"
    await assert_clean_audit(databases)
