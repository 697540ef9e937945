"""The catalog over real HTTP: PUT with If-Match / If-None-Match, ETags, keyset pages, the CSV import,
and stock refused over HTTP for SKUs that are not in the catalog."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from invsaga.api.limits import JSON_BODY_LIMIT
from tests.helpers import rows_on_every_shard
from tests.integration.api_fixtures import ADMIN, CHECKOUT, assert_problem, idempotency


def fresh(prefix: str = "API") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def put(http, sku: str, body: dict, **headers: str):
    return await http.put(f"/v1/products/{sku}", json=body, headers={**ADMIN, **headers})


MUG = {"name": "Blue mug", "price": "12.50", "currency": "USD"}


async def catalog_rows(databases) -> list[tuple]:
    async with databases.core.connect() as conn:
        rows = await conn.execute(text("SELECT sku, name, price, currency, active, version FROM products"))
        return sorted(tuple(r) for r in rows)


async def test_create_read_and_change_with_the_etag_verbatim(http):
    sku = fresh()
    created = await put(http, sku, MUG)
    again = await put(http, sku, {**MUG, "price": 12.5})  # a retried create, the price as a number
    read = await http.get(f"/v1/products/{sku}", headers=CHECKOUT)
    changed = await put(http, sku, {**MUG, "price": "13.00"}, **{"If-Match": read.headers["ETag"]})
    weak = await put(http, sku, {**MUG, "active": False}, **{"If-Match": f"W/{changed.headers['ETag']}"})
    bare = await put(http, sku, {**MUG, "active": False}, **{"If-Match": "3"})  # same values: no bump

    assert created.status_code == 201 and created.headers["ETag"] == '"1"', created.text
    assert created.json() | {"updated_at": None} == {
        "sku": sku,
        **MUG,
        "active": True,
        "version": 1,
        "updated_at": None,
    }
    assert again.status_code == 200 and again.json()["version"] == 1
    assert read.status_code == 200 and read.headers["ETag"] == '"1"'
    assert changed.status_code == 200 and changed.json()["price"] == "13.00", changed.text
    assert weak.status_code == 200 and weak.json()["version"] == 3 and weak.json()["active"] is False
    assert bare.status_code == 200 and bare.json()["version"] == 3 and bare.headers["ETag"] == '"3"'


async def test_preconditions_that_fail_change_nothing(http, databases):
    sku = fresh()
    await put(http, sku, MUG)
    await put(http, sku, {**MUG, "name": "v2"}, **{"If-Match": '"1"'})
    before = await catalog_rows(databases)

    stale = await put(http, sku, {**MUG, "name": "v3"}, **{"If-Match": '"1"'})
    exists = await put(http, sku, {**MUG, "name": "other"})
    create_only = await put(http, sku, MUG, **{"If-None-Match": "*"})
    missing = await put(http, fresh(), MUG, **{"If-Match": '"1"'})

    assert assert_problem(stale, 412, "version-conflict")["actual"] == 2
    assert_problem(exists, 409, "product-exists")
    assert_problem(create_only, 412, "version-conflict")
    assert_problem(missing, 404, "product-not-found")
    assert await catalog_rows(databases) == before


async def test_racing_puts_with_the_same_if_match_exactly_one_wins(http):
    sku = fresh()
    etag = (await put(http, sku, MUG)).headers["ETag"]

    responses = await asyncio.gather(
        *(put(http, sku, {**MUG, "name": f"mug {n}"}, **{"If-Match": etag}) for n in range(25))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 24, statuses
    winner = next(r for r in responses if r.status_code == 200)
    for loser in responses:
        if loser.status_code == 412:
            assert_problem(loser, 412, "version-conflict")
    final = (await http.get(f"/v1/products/{sku}", headers=ADMIN)).json()
    assert final["version"] == 2 and final["name"] == winner.json()["name"]


async def test_bad_input_is_a_problem_and_changes_nothing(http, databases):
    sku = fresh()
    await put(http, sku, MUG)
    before = await catalog_rows(databases)
    bad_bodies = [
        {**MUG, "price": "1.005"},
        {**MUG, "price": "-1"},
        {**MUG, "price": "10000000000"},
        {**MUG, "price": "NaN"},
        {**MUG, "currency": "usd"},
        {**MUG, "currency": "XYZ"},
        {**MUG, "name": ""},
        {**MUG, "name": "   "},
        {**MUG, "name": "x" * 201},
        {**MUG, "name": "tab\there"},
        {**MUG, "active": "yes"},
        {**MUG, "colour": "blue"},
        {"price": "1.00"},
    ]

    answers = [await put(http, fresh(), body) for body in bad_bodies]
    answers += [
        await put(http, sku, {**MUG, "name": "n"}, **{"If-Match": "seven"}),
        await put(http, sku, {**MUG, "name": "n"}, **{"If-None-Match": '"1"'}),
        await put(http, sku, {**MUG, "name": "n"}, **{"If-Match": '"1"', "If-None-Match": "*"}),
        await http.put(f"/v1/products/{sku}", json=MUG, headers=CHECKOUT),
        await http.get("/v1/products", params={"cursor": "not-a-cursor"}, headers=ADMIN),
        await http.get("/v1/products", params={"limit": 0}, headers=ADMIN),
    ]

    for response in answers[:-3]:
        assert_problem(response, 422, "invalid-input")
    assert_problem(answers[-3], 403, "forbidden")
    assert_problem(answers[-2], 422, "invalid-input")
    assert_problem(answers[-1], 422, "invalid-input")
    assert_problem(await http.get(f"/v1/products/{fresh()}", headers=ADMIN), 404, "product-not-found")
    assert await catalog_rows(databases) == before


async def test_pages_follow_the_opaque_cursor_to_a_null_end(http):
    prefix = fresh("ZZZ-PAGE")  # sorts last, so the final pages are ours alone
    skus = [f"{prefix}-{n}" for n in range(5)]
    for sku in skus:
        await put(http, sku, MUG)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/v1/products", params=params, headers=CHECKOUT)).json()
        seen += [p["sku"] for p in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10_000

    assert [s for s in seen if s.startswith(prefix)] == skus
    assert len(seen) == len(set(seen)) and seen == sorted(seen)


async def test_catalog_import_route_is_all_or_nothing(http, databases):
    a, b = fresh(), fresh()
    good = f"sku,name,price,currency,active\n{a},Mug,1.50,EUR,true\n{b},Cup,2,,\n"
    bad = f"sku,name,price,currency,active\n{a},Mug,9.99,EUR,true\n{fresh()},Cup,x,USD,true\n"
    csv = {**ADMIN, "Content-Type": "text/csv"}

    applied = await http.post("/v1/products/import", content=good, headers=csv)
    before = await catalog_rows(databases)
    refused = await http.post("/v1/products/import", content=bad, headers=csv)
    wrong_type = await http.post("/v1/products/import", content=good, headers=ADMIN)

    assert applied.status_code == 200, applied.text
    assert {k: applied.json()[k] for k in ("rows_read", "applied", "created", "unchanged")} == {
        "rows_read": 2,
        "applied": 2,
        "created": 2,
        "unchanged": 0,
    }
    assert [p["line"] for p in assert_problem(refused, 422, "invalid-input")["problems"]] == [3]
    assert_problem(wrong_type, 415, "unsupported-media-type")
    assert await catalog_rows(databases) == before


async def test_a_catalog_file_larger_than_a_json_body_imports(http, databases):
    """The import routes take files far past the 1 MiB JSON limit, the catalog's as well as the stock's."""
    tag = uuid.uuid4().hex[:8]
    rows = [
        f"BIG-{tag}-{n},A product with a long enough name to fill the file {n},1.00,USD,true\n"
        for n in range(16_000)
    ]
    body = ("sku,name,price,currency,active\n" + "".join(rows)).encode()
    assert len(body) > JSON_BODY_LIMIT

    answer = await http.post(
        "/v1/products/import", content=body, headers={**ADMIN, "Content-Type": "text/csv"}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == len(rows)
    async with databases.core.begin() as conn:
        await conn.execute(text("DELETE FROM products WHERE sku LIKE :p"), {"p": f"BIG-{tag}-%"})


async def test_stock_for_a_sku_not_in_the_catalog_is_refused_unless_allowed(http, databases, store):
    known, unknown = fresh("STK"), fresh("STKX")
    await put(http, known, MUG)
    receipt = {"quantity": 3}
    csv = {**ADMIN, "Content-Type": "text/csv"}
    file = f"sku,location,quantity\n{known},main,4\n{unknown},main,4\n{unknown},east,4\n"

    po_key = idempotency()
    refused = await http.post(f"/v1/stock/{unknown}/main/receipts", json=receipt, headers={**ADMIN, **po_key})
    refused_set = await http.put(
        f"/v1/stock/{unknown}/main", json={"on_hand": 3}, headers={**ADMIN, "If-Match": '"0"'}
    )
    refused_import = await http.post("/v1/stock/import", content=file, headers=csv)
    nothing = await rows_on_every_shard(
        databases, "SELECT 1 FROM stock_levels WHERE sku = ANY(:s)", s=[known, unknown]
    )
    allowed = await http.post(
        f"/v1/stock/{unknown}/main/receipts",
        params={"allow_unknown_product": "true"},
        json=receipt,
        headers={**ADMIN, **idempotency()},
    )
    imported = await http.post(
        "/v1/stock/import", params={"allow_unknown_product": "true"}, content=file, headers=csv
    )

    assert assert_problem(refused, 409, "unknown-product")["skus"] == [unknown]
    assert_problem(refused_set, 409, "unknown-product")
    problems = assert_problem(refused_import, 409, "unknown-product")["problems"]
    assert [p["line"] for p in problems] == [3, 4]
    assert nothing == []
    assert allowed.status_code == 200 and allowed.json()["on_hand"] == 3, allowed.text
    assert imported.status_code == 200, imported.text
    assert {lv.location: lv.on_hand for lv in await store.get(unknown)} == {"main": 4, "east": 4}

    # The refusal was not recorded under its key: once the product exists, the same key receives.
    await put(http, unknown, MUG)
    retried = await http.post(f"/v1/stock/{unknown}/main/receipts", json=receipt, headers={**ADMIN, **po_key})
    assert retried.status_code == 200 and retried.json()["on_hand"] == 4 + 3, retried.text
