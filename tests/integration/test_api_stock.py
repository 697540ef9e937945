"""GET /v1/stock/{sku} and GET /v1/stock over real HTTP against the real shards."""

from __future__ import annotations

import asyncio

from invsaga.domain.stock import MAX_SKU_LENGTH
from tests.helpers import skus_on_shard, stock_up
from tests.integration.api_fixtures import (
    ADMIN,
    CHECKOUT,
    assert_problem,
)


async def test_one_sku_per_location_and_in_total_with_an_etag(http, store):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 30, "main")
    await stock_up(store, sku, 12, "backroom")
    [main] = [lv for lv in await store.get(sku) if lv.location == "main"]

    response = await http.get(f"/v1/stock/{sku}", headers=CHECKOUT)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sku"] == sku
    by_location = {row["location"]: row for row in body["locations"]}
    assert by_location["main"] == {
        "location": "main",
        "on_hand": 30,
        "reserved": 0,
        "available": 30,
        "version": main.version,
    }
    assert by_location["backroom"]["on_hand"] == 12
    assert body["total"] == {"on_hand": 42, "reserved": 0, "available": 42}
    assert response.headers["etag"].startswith('"')


async def test_the_etag_answers_304_until_the_stock_changes(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    first = await http.get(f"/v1/stock/{sku}", headers=CHECKOUT)
    etag = first.headers["etag"]

    unchanged = await http.get(f"/v1/stock/{sku}", headers={**CHECKOUT, "If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag

    await stock_up(store, sku, 1)
    changed = await http.get(f"/v1/stock/{sku}", headers={**CHECKOUT, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["total"]["on_hand"] == 6


async def test_reserved_stock_is_not_available(http, store):
    from tests.helpers import request

    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    await store.reserve(0, request(f"hold-{sku}", (sku, 4)))

    body = (await http.get(f"/v1/stock/{sku}", headers=ADMIN)).json()

    assert body["total"] == {"on_hand": 10, "reserved": 4, "available": 6}


async def test_an_unknown_sku_is_a_404_problem(http):
    response = await http.get("/v1/stock/NO-SUCH-SKU-EVER", headers=CHECKOUT)
    problem = assert_problem(response, 404, "unknown-sku")
    assert problem["code"] == "unknown_sku" and problem["sku"] == "NO-SUCH-SKU-EVER"


async def test_a_malformed_or_oversized_sku_is_a_422_problem(http):
    too_long = "A" * (MAX_SKU_LENGTH + 1)
    for bad in (too_long, "-leading-dash", "sp%20ace"):
        response = await http.get(f"/v1/stock/{bad}", headers=CHECKOUT)
        assert_problem(response, 422, "invalid-input")


async def test_batch_reads_every_shard_and_lists_unknown_skus(http, store):
    on_zero = skus_on_shard(store.router, 0, 2)
    on_one = skus_on_shard(store.router, 1, 2)
    for n, sku in enumerate(on_zero + on_one, start=1):
        await stock_up(store, sku, n)
    wanted = [*on_zero, "GHOST-1", *on_one, on_zero[0]]  # a duplicate is answered once

    response = await http.get("/v1/stock", params=[("sku", s) for s in wanted], headers=CHECKOUT)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["sku"] for item in body["items"]] == on_zero + on_one
    assert [item["total"]["on_hand"] for item in body["items"]] == [1, 2, 3, 4]
    assert body["unknown"] == ["GHOST-1"]


async def test_batch_reads_run_concurrently_and_agree_with_single_reads(http, store):
    skus = skus_on_shard(store.router, 0, 3) + skus_on_shard(store.router, 1, 3)
    for sku in skus:
        await stock_up(store, sku, 7)
    params = [("sku", s) for s in skus]
    batches = await asyncio.gather(
        *(http.get("/v1/stock", params=params, headers=CHECKOUT) for _ in range(20))
    )
    singles = await asyncio.gather(*(http.get(f"/v1/stock/{s}", headers=CHECKOUT) for s in skus))
    assert all(b.status_code == 200 and b.json() == batches[0].json() for b in batches)
    assert batches[0].json()["items"] == [single.json() for single in singles]


async def test_batch_needs_one_to_a_hundred_valid_skus(http):
    assert_problem(await http.get("/v1/stock", headers=CHECKOUT), 422, "invalid-input")
    too_many = [("sku", f"S-{n}") for n in range(101)]
    assert_problem(await http.get("/v1/stock", params=too_many, headers=CHECKOUT), 422, "invalid-input")
    bad = [("sku", "A" * (MAX_SKU_LENGTH + 1))]
    assert_problem(await http.get("/v1/stock", params=bad, headers=CHECKOUT), 422, "invalid-input")
