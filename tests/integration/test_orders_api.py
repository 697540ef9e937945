"""GET /v1/orders and GET /v1/orders/{order_id} over real HTTP: orders that real checkouts recorded, with
the holds their shards show, keyset pages, and refused input as problem+json."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tests.helpers import assert_clean_audit, skus_on_shard, stocked_sku
from tests.integration.api_fixtures import (
    ADMIN,
    CHECKOUT,
    assert_problem,
    checkout_body,
    idempotency,
    wait_until_terminal,
)
from tests.integration.order_rows import insert_orders, order, tag_fixture  # noqa: F401 (a fixture)
from tests.integration.test_checkout_saga import order as saga_order


async def checkout(http, body):
    return await http.post("/v1/checkouts", json=body, headers={**CHECKOUT, **idempotency()})


async def test_a_confirmed_order_shows_its_lines_amount_link_and_committed_holds_on_both_shards(
    http, store, databases
):
    east = await stocked_sku(databases, store, 10, shard=0)
    west = await stocked_sku(databases, store, 10, shard=1)
    body = checkout_body((east, 2), (west, 1))
    assert (await checkout(http, body)).status_code == 202
    assert (await wait_until_terminal(http, body["order_id"]))["status"] == "CONFIRMED"

    response = await http.get(f"/v1/orders/{body['order_id']}", headers=ADMIN)

    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["order_id"], shown["customer_id"], shown["status"], shown["reason"]) == (
        body["order_id"],
        body["customer_id"],
        "confirmed",
        None,
    )
    assert (shown["amount"], shown["currency"]) == ("37.50", "USD")  # 3 units at 12.50
    assert shown["links"] == {
        "self": f"/v1/orders/{body['order_id']}",
        "checkout": f"/v1/checkouts/{body['order_id']}",
    }
    assert sorted((ln["sku"], ln["quantity"]) for ln in shown["lines"]) == sorted([(east, 2), (west, 1)])
    holds = [(h["sku"], h["location"], h["quantity"], h["state"]) for h in shown["holds"]]
    assert holds == sorted([(east, "main", 2, "committed"), (west, "main", 1, "committed")])
    assert datetime.fromisoformat(shown["created_at"]) <= datetime.fromisoformat(shown["updated_at"])
    await assert_clean_audit(databases)


async def test_a_declined_order_shows_its_reason_and_its_released_hold(http, store, databases):
    sku = await stocked_sku(databases, store, 4, shard=1)
    body = checkout_body((sku, 3), token="tok_decline")
    assert (await checkout(http, body)).status_code == 202
    assert (await wait_until_terminal(http, body["order_id"]))["status"] == "REJECTED"

    shown = (await http.get(f"/v1/orders/{body['order_id']}", headers=CHECKOUT)).json()

    assert shown["status"] == "rejected" and "declined" in shown["reason"], shown
    assert [(h["sku"], h["location"], h["quantity"], h["state"]) for h in shown["holds"]] == [
        (sku, "main", 3, "released")
    ]


async def test_an_out_of_stock_order_shows_its_short_lines(http, saga, store, databases):
    """Refused by its checkout's reserve (the API's sold-out path would record no order at all)."""
    sku = await stocked_sku(databases, store, 1, shard=0)
    plenty = await stocked_sku(databases, store, 5, shard=1)
    customer = f"cust-short-{uuid.uuid4().hex[:8]}"
    result = await saga.checkout(
        saga_order((sku, 2), (plenty, 1)).model_copy(update={"customer_id": customer})
    )
    assert result.reason == "out_of_stock"

    shown = (await http.get(f"/v1/orders/{result.order_id}", headers=CHECKOUT)).json()

    assert (shown["status"], shown["reason"]) == ("rejected", "out_of_stock"), shown
    assert shown["shortages"] == [{"sku": sku, "location": "main", "requested": 2, "available": 1}]
    listed = (await http.get("/v1/orders", params={"customer_id": customer}, headers=CHECKOUT)).json()
    assert [(o["order_id"], o["shortages"]) for o in listed["items"]] == [
        (result.order_id, shown["shortages"])
    ]
    await assert_clean_audit(databases)


async def test_a_line_split_across_locations_shows_one_hold_per_location(http, store, databases, tag):
    (sku,) = skus_on_shard(store.router, 1, 1, prefix="SPLIT")
    order_id = f"{tag}-split"
    await insert_orders(databases, [order(order_id, f"{tag}-c", datetime.now(UTC))])
    async with databases.core.begin() as conn:
        lines = f'[{{"sku": "{sku}", "quantity": 5, "location": null}}]'
        await conn.execute(
            text("UPDATE orders SET lines = CAST(:lines AS jsonb) WHERE order_id = :id"),
            {"lines": lines, "id": order_id},
        )
    async with databases.shards[1].begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO reservations (order_id, sku, location, quantity, state, expires_at)"
                " VALUES (:o, :s, 'west', 2, 'held', now() + interval '1 hour'),"
                " (:o, :s, 'east', 3, 'held', now() + interval '1 hour')"
            ),
            {"o": order_id, "s": sku},
        )
    try:
        shown = (await http.get(f"/v1/orders/{order_id}", headers=CHECKOUT)).json()
    finally:
        async with databases.shards[1].begin() as conn:
            await conn.execute(text("DELETE FROM reservations WHERE order_id = :o"), {"o": order_id})

    assert shown["lines"] == [{"sku": sku, "quantity": 5, "location": None}]
    assert [(h["sku"], h["location"], h["quantity"], h["state"]) for h in shown["holds"]] == [
        (sku, "east", 3, "held"),
        (sku, "west", 2, "held"),
    ]


async def test_the_list_pages_by_cursor_with_filters(http, databases, tag):
    base = datetime(2026, 3, 1, tzinfo=UTC)
    customer = f"{tag}-pager"
    await insert_orders(
        databases,
        [
            order(f"{tag}-{n:02d}", customer, base + timedelta(minutes=n), "paid" if n % 3 else "pending")
            for n in range(11)
        ],
    )
    seen, cursor, pages = [], None, 0
    while True:
        params = {"customer_id": customer, "limit": 4, **({"cursor": cursor} if cursor else {})}
        response = await http.get("/v1/orders", params=params, headers=CHECKOUT)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [o["order_id"] for o in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    pending = await http.get(
        "/v1/orders",
        params={"customer_id": customer, "status": "pending", "since": "2026-03-01T00:03:00+00:00"},
        headers=ADMIN,
    )

    assert seen == [f"{tag}-{n:02d}" for n in range(10, -1, -1)] and pages == 3
    assert [o["order_id"] for o in pending.json()["items"]] == [f"{tag}-09", f"{tag}-06", f"{tag}-03"]
    item = pending.json()["items"][0]
    assert item["links"]["checkout"] == f"/v1/checkouts/{tag}-09" and "holds" not in item


async def test_bad_filters_and_unknown_orders_are_problems(http):
    for params in (
        {"status": "shipped"},
        {"since": "yesterday"},
        {"limit": 0},
        {"limit": 501},
        {"cursor": "garbage"},
        {"customer_id": "bad customer"},
        {"since": "0001-01-01T00:00:00+01:00"},
    ):
        assert_problem(await http.get("/v1/orders", params=params, headers=CHECKOUT), 422, "invalid-input")
    assert_problem(await http.get("/v1/orders/never-was", headers=CHECKOUT), 404, "order-not-found")
    assert_problem(await http.get("/v1/orders/bad id", headers=CHECKOUT), 422, "invalid-input")
    assert_problem(await http.get("/v1/orders"), 401, "unauthorized")
    assert_problem(
        await http.get(f"/v1/orders/{uuid.uuid4()}", headers={"Authorization": "Bearer x"}),
        401,
        "unauthorized",
    )
