"""Many buyers at once over real HTTP: a hot SKU sells exactly its stock, and nothing is oversold."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from invsaga.domain.checkout import workflow_id_for
from tests.helpers import assert_clean_audit, stocked_sku
from tests.integration.api_fixtures import (
    CHECKOUT,
    assert_problem,
    checkout_body,
    idempotency,
)

STOCK = 40
BUYERS = 300


async def test_300_concurrent_checkouts_for_40_units_sell_exactly_40(http, api, store, databases):
    sku = await stocked_sku(databases, store, STOCK, shard=1)
    bodies = [checkout_body((sku, 1)) for _ in range(BUYERS)]

    retried = 0

    async def buy(body: dict) -> httpx.Response:
        # A client that follows the contract: a 503 (no stock decision in time on a loaded machine) is
        # retried with the same Idempotency-Key, which attaches to the same checkout.
        nonlocal retried
        headers = {**CHECKOUT, **idempotency()}
        for _ in range(5):
            response = await http.post("/v1/checkouts", json=body, headers=headers)
            if response.status_code != 503:
                return response
            assert_problem(response, 503, "unavailable")
            retried += 1
        return response

    responses = await asyncio.gather(*(buy(body) for body in bodies))
    print(f"{retried} posts answered 503 and were retried with their key")

    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == STOCK and statuses.count(409) == BUYERS - STOCK, sorted(set(statuses))
    for response in responses:
        if response.status_code == 409:
            problem = assert_problem(response, 409, "out-of-stock")
            assert problem["shortages"] == [{"sku": sku, "location": "main", "requested": 1, "available": 0}]
    accepted = {b["order_id"] for b, r in zip(bodies, responses, strict=True) if r.status_code == 202}

    # Wait for every workflow to finish (a long poll each, not a busy loop), then ask the API.
    await asyncio.gather(
        *(api.temporal.get_workflow_handle(workflow_id_for(b["order_id"])).result() for b in bodies)
    )
    semaphore = asyncio.Semaphore(50)

    async def final(order_id: str) -> dict:
        async with semaphore:
            response = await http.get(f"/v1/checkouts/{order_id}", headers=CHECKOUT)
        assert response.status_code == 200, response.text
        return response.json()

    states = await asyncio.gather(*(final(b["order_id"]) for b in bodies))
    confirmed = {s["order_id"] for s in states if s["status"] == "CONFIRMED"}
    assert confirmed == accepted
    assert all(s["terminal"] for s in states)
    assert {(s["status"], s["reason"]) for s in states if s["order_id"] not in accepted} == {
        ("REJECTED", "out_of_stock")
    }

    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (0, 0)
    async with databases.core.connect() as conn:
        recorded = await conn.execute(
            text(
                "SELECT status, count(*) FROM orders WHERE order_id = ANY (:ids) GROUP BY status"
            ).bindparams(bindparam("ids", type_=ARRAY(Text))),
            {"ids": [b["order_id"] for b in bodies]},
        )
        assert dict(recorded.all()) == {"confirmed": STOCK, "rejected": BUYERS - STOCK}
    await assert_clean_audit(databases)
