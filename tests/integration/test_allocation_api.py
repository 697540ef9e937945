"""Lines without a location over HTTP: the checkout's answer and state show the split, a SKU named with
and without a location is 422, and the sold-out screen never refuses such a line while some location of
the SKU still has stock."""

from __future__ import annotations

import asyncio
import time

from tests.helpers import assert_clean_audit, catalog, skus_on_shard, stock_up
from tests.integration.api_fixtures import (
    CHECKOUT,
    assert_problem,
    checkout_body,
    idempotency,
    wait_until_terminal,
)


async def post(http, body):
    return await http.post("/v1/checkouts", json=body, headers={**CHECKOUT, **idempotency()})


async def two_locations(databases, store, main: int, east: int) -> str:
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="APISPLIT")
    await catalog(databases, store, (sku, main))
    await stock_up(store, sku, east, "east")
    return sku


async def test_the_answer_and_the_state_show_the_split(http, store, databases):
    sku = await two_locations(databases, store, main=1, east=2)
    body = checkout_body((sku, 3))

    response = await post(http, body)

    assert response.status_code == 202, response.text
    split = [{"sku": sku, "location": "east", "quantity": 2}, {"sku": sku, "location": "main", "quantity": 1}]
    assert response.json()["allocations"] == split
    final = await wait_until_terminal(http, body["order_id"])
    assert final["status"] == "CONFIRMED" and final["allocations"] == split
    assert {lv.location: lv.on_hand for lv in await store.get(sku)} == {"east": 0, "main": 0}
    await assert_clean_audit(databases)


async def test_a_sku_with_and_without_a_location_is_422_and_nothing_moves(http, api, store, databases):
    sku = await two_locations(databases, store, main=5, east=5)
    body = checkout_body((sku, 1), (sku, 1))
    body["lines"][1]["location"] = "east"

    response = await post(http, body)

    problem = assert_problem(response, 422, "invalid-input")
    assert "without a location" in str(problem)
    assert sum(lv.reserved for lv in await store.get(sku)) == 0


async def test_sold_out_at_one_location_never_refuses_a_line_that_any_location_can_fill(
    http, store, databases
):
    sku = await two_locations(databases, store, main=1, east=1)
    at_main = checkout_body((sku, 1))
    at_main["lines"][0]["location"] = "main"
    assert (await post(http, at_main)).status_code == 202
    await wait_until_terminal(http, at_main["order_id"])
    again = checkout_body((sku, 1))
    again["lines"][0]["location"] = "main"
    assert_problem(await post(http, again), 409, "out-of-stock")  # the screen learns: main is gone
    again["order_id"] += "-2"
    assert assert_problem(await post(http, again), 409, "out-of-stock")["fast_path"] is True

    # main is sold out, east is not: a line without a location is sold, from east.
    anywhere = await post(http, checkout_body((sku, 1)))
    assert anywhere.status_code == 202, anywhere.text
    assert anywhere.json()["allocations"] == [{"sku": sku, "location": "east", "quantity": 1}]
    await wait_until_terminal(http, anywhere.json()["order_id"])

    # Now every location is empty: refused, then refused from the hint, naming no single location.
    assert_problem(await post(http, checkout_body((sku, 1))), 409, "out-of-stock")
    hinted = assert_problem(await post(http, checkout_body((sku, 1))), 409, "out-of-stock")
    assert hinted["fast_path"] is True
    assert hinted["shortages"] == [{"sku": sku, "location": None, "requested": 1, "available": 0}]

    # Stock back at a third location clears the hint: the next buyer gets it.
    await stock_up(store, sku, 1, "west")
    deadline = time.monotonic() + 15
    while True:
        response = await post(http, checkout_body((sku, 1)))
        if response.status_code == 202 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 202, response.text
    assert response.json()["allocations"] == [{"sku": sku, "location": "west", "quantity": 1}]
    await wait_until_terminal(http, response.json()["order_id"])
    await assert_clean_audit(databases)
