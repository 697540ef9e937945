"""Operator routes over real HTTP: set stock with If-Match, receipts, streamed CSV import, body limits."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from invsaga.api.limits import JSON_BODY_LIMIT
from tests.helpers import assert_clean_audit, in_catalog, request, skus_on_shard, stock_up
from tests.integration.api_fixtures import (
    ADMIN,
    assert_problem,
    idempotency,
)


async def version_of(store, sku: str, location: str = "main") -> int:
    return next(lv.version for lv in await store.get(sku) if lv.location == location)


async def put(http, sku, on_hand, if_match=None, location="main"):
    headers = dict(ADMIN)
    if if_match is not None:
        headers["If-Match"] = if_match
    return await http.put(f"/v1/stock/{sku}/{location}", json={"on_hand": on_hand}, headers=headers)


# --- PUT /v1/stock/{sku}/{location} ---------------------------------------------------------------------


async def test_set_with_the_current_version_answers_the_new_level_and_version(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    version = await version_of(store, sku)

    response = await put(http, sku, 25, f'"{version}"')

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "sku": sku,
        "location": "main",
        "on_hand": 25,
        "reserved": 0,
        "available": 25,
        "version": version + 1,
    }
    assert response.headers["etag"] == f'"{version + 1}"'
    assert (await store.get(sku))[0].on_hand == 25


async def test_a_stale_version_is_412_and_changes_nothing(http, store):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 10)
    stale = await version_of(store, sku)
    await stock_up(store, sku, 1)

    response = await put(http, sku, 3, str(stale))

    problem = assert_problem(response, 412, "version-conflict")
    assert (problem["expected"], problem["actual"]) == (stale, stale + 1)
    assert (await store.get(sku))[0].on_hand == 11


async def test_set_without_if_match_is_428_and_a_malformed_one_is_422(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    assert_problem(await put(http, sku, 3), 428, "precondition-required")
    assert_problem(await put(http, sku, 3, "v-one"), 422, "invalid-input")
    assert (await store.get(sku))[0].on_hand == 10


async def test_the_etag_a_get_answers_is_an_if_match_the_set_accepts(http, store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 10)
    await stock_up(store, sku, 3, location="annex")
    etag = (await http.get(f"/v1/stock/{sku}", headers=ADMIN)).headers["etag"]

    # Racing sets that all read the same state: exactly one wins, the others are told it changed.
    racing = await asyncio.gather(*(put(http, sku, 20 + n, etag) for n in range(5)))

    codes = sorted(r.status_code for r in racing)
    assert codes == [200, 412, 412, 412, 412], [r.text for r in racing]
    [won] = [r.json() for r in racing if r.status_code == 200]
    assert [lv.on_hand for lv in await store.get(sku)] == [3, won["on_hand"]]  # annex, main
    fresh = (await http.get(f"/v1/stock/{sku}", headers=ADMIN)).headers["etag"]
    assert (await put(http, sku, 7, "W/" + fresh)).status_code == 200
    version = await version_of(store, sku)
    assert (await put(http, sku, 8, f'"999", {version}')).status_code == 200  # a list: any one matches
    assert (await put(http, sku, 9, fresh.strip('"'), location="annex")).status_code == 412  # stale now
    assert [lv.on_hand for lv in await store.get(sku)] == [3, 8]  # annex, main
    await assert_clean_audit(databases)


async def test_version_zero_creates_a_location_once(http, store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await in_catalog(databases, sku)
    created = await put(http, sku, 9, "0", location="annex")
    assert created.status_code == 200 and created.json()["version"] == 1
    assert_problem(await put(http, sku, 4, "0", location="annex"), 412, "version-conflict")


async def test_setting_an_unknown_location_with_a_version_is_404(http, store):
    (sku,) = skus_on_shard(store.router, 1, 1)
    assert_problem(await put(http, sku, 4, "3"), 404, "unknown-sku")


async def test_set_below_what_is_reserved_is_409(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    await store.reserve(0, request(f"hold-{sku}", (sku, 6)))
    version = await version_of(store, sku)
    problem = assert_problem(await put(http, sku, 5, str(version)), 409, "below-reserved")
    assert (problem["requested"], problem["reserved"]) == (5, 6)


async def test_set_validates_the_body(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    for bad in ({"on_hand": -1}, {"on_hand": "5"}, {"on_hand": 10**16}, {}, {"on_hand": 1, "x": 1}):
        response = await http.put(f"/v1/stock/{sku}/main", json=bad, headers={**ADMIN, "If-Match": "0"})
        assert_problem(response, 422, "invalid-input")


# --- POST /v1/stock/{sku}/{location}/receipts ---------------------------------------------------------


async def test_a_receipt_adds_units_and_creates_the_location(http, store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await in_catalog(databases, sku)
    path = f"/v1/stock/{sku}/dock-2/receipts"
    first = await http.post(
        path, json={"quantity": 5, "reference": "PO-1"}, headers={**ADMIN, **idempotency()}
    )
    second = await http.post(path, json={"quantity": 3}, headers={**ADMIN, **idempotency()})
    assert first.status_code == second.status_code == 200, second.text
    assert (first.json()["on_hand"], second.json()["on_hand"]) == (5, 8)
    assert second.json()["version"] == first.json()["version"] + 1
    assert {lv.location: lv.on_hand for lv in await store.get(sku)} == {"dock-2": 8}


async def test_a_receipt_needs_a_key_and_a_positive_quantity(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    path = f"/v1/stock/{sku}/main/receipts"
    assert_problem(
        await http.post(path, json={"quantity": 1}, headers=ADMIN), 400, "idempotency-key-required"
    )
    for bad in ({"quantity": 0}, {"quantity": -3}, {"quantity": 10**10}, {"quantity": 1.5}):
        response = await http.post(path, json=bad, headers={**ADMIN, **idempotency()})
        assert_problem(response, 422, "invalid-input")
    assert (await store.get_many([sku])) == {}


async def forget_api_key(databases, key: str) -> None:
    """What the API's key purge does a day later: the receipt is then known only to the stock ledger."""
    async with databases.core.begin() as conn:
        await conn.execute(text("DELETE FROM api_idempotency_keys WHERE idempotency_key = :k"), {"k": key})


async def test_a_receipt_key_reused_for_another_sku_receives_it(http, store, databases):
    a, b = skus_on_shard(store.router, 0, 2)
    await in_catalog(databases, a, b)
    headers = {**ADMIN, **idempotency(f"po-{a}")}
    first = await http.post(f"/v1/stock/{a}/main/receipts", json={"quantity": 5}, headers=headers)
    assert first.status_code == 200, first.text
    await forget_api_key(databases, f"po-{a}")

    other = await http.post(f"/v1/stock/{b}/main/receipts", json={"quantity": 3}, headers=headers)

    assert other.status_code == 200, other.text
    assert (other.json()["sku"], other.json()["on_hand"]) == (b, 3)
    assert [lv.on_hand for lv in await store.get(a)] == [5]


async def test_a_receipt_key_reused_with_another_quantity_is_409(http, store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await in_catalog(databases, sku)
    path = f"/v1/stock/{sku}/main/receipts"
    headers = {**ADMIN, **idempotency(f"po-{sku}")}
    assert (await http.post(path, json={"quantity": 5}, headers=headers)).status_code == 200
    await forget_api_key(databases, f"po-{sku}")

    problem = assert_problem(
        await http.post(path, json={"quantity": 6}, headers=headers), 409, "idempotency-key-conflict"
    )

    assert f"po-{sku}" in problem["detail"]
    assert [lv.on_hand for lv in await store.get(sku)] == [5]


async def test_a_receipt_past_bigint_on_hand_is_422_and_changes_nothing(http, store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await in_catalog(databases, sku)
    await stock_up(store, sku, 2**63 - 1)  # as a CSV import may set it
    path = f"/v1/stock/{sku}/main/receipts"
    for quantity in (1, 2**63, 10**400):
        body = f'{{"quantity": {quantity}}}'.encode()
        response = await http.post(
            path, content=body, headers={**ADMIN, **idempotency(), "Content-Type": "application/json"}
        )
        assert_problem(response, 422, "invalid-input")
    [level] = await store.get(sku)
    assert (level.on_hand, level.version) == (2**63 - 1, 1)


# --- POST /v1/stock/import -------------------------------------------------------------------------------


def csv_rows(*rows: str) -> bytes:
    return ("sku,location,quantity\n" + "".join(row + "\n" for row in rows)).encode()


async def import_csv(http, content, content_type="text/csv"):
    return await http.post(
        "/v1/stock/import", content=content, headers={**ADMIN, "Content-Type": content_type}
    )


async def test_import_reports_rows_imported_and_rejected_with_line_numbers(http, store, databases):
    a, b = skus_on_shard(store.router, 0, 2)
    (c,) = skus_on_shard(store.router, 1, 1)
    await in_catalog(databases, a, b, c)
    await stock_up(store, b, 10)
    await store.reserve(0, request(f"hold-{b}", (b, 4)))

    async def streamed():  # chunked upload: no Content-Length
        yield csv_rows(f"{a},main,5")
        yield f"{b},main,2\n".encode()
        yield f"{c},main,7\n{c},annex,1\n".encode()

    response = await http.post(
        "/v1/stock/import", content=streamed(), headers={**ADMIN, "Content-Type": "text/csv; charset=utf-8"}
    )

    assert response.status_code == 200, response.text
    report = response.json()
    # The same name as the CLI's report (`applied`), not a second one.
    assert (report["rows_read"], report["applied"], report["unchanged"]) == (4, 3, 0)
    [rejected] = report["rejected"]
    assert (rejected["line"], rejected["sku"], rejected["quantity"], rejected["reserved"]) == (3, b, 2, 4)
    levels = await store.get_many([a, b, c])
    assert levels[a][0].on_hand == 5 and levels[b][0].on_hand == 10
    assert {lv.location: lv.on_hand for lv in levels[c]} == {"main": 7, "annex": 1}


async def test_a_malformed_import_changes_nothing_and_names_each_bad_line(http, store, databases):
    (a,) = skus_on_shard(store.router, 0, 1)
    await in_catalog(databases, a, f"{a}-2")
    content = csv_rows(f"{a},main,5", "bad sku,main,1", f"{a}-2,main,-4", f"{a},main,6")
    problem = assert_problem(await import_csv(http, content), 422, "invalid-input")
    assert [p["line"] for p in problem["problems"]] == [3, 4, 5]  # 5 repeats line 2
    assert await store.get_many([a]) == {}


async def test_import_needs_a_csv_body(http):
    assert_problem(await import_csv(http, b"", "text/csv"), 422, "invalid-input")
    assert_problem(
        await import_csv(http, csv_rows("A,main,1"), "application/json"), 415, "unsupported-media-type"
    )
    assert_problem(
        await import_csv(http, csv_rows("A,main,1"), "text/csv; charset=latin-1"),
        415,
        "unsupported-media-type",
    )


# --- body limits and malformed bodies ----------------------------------------------------------------


async def test_an_oversized_json_body_is_413_declared_or_streamed(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    big = json.dumps({"on_hand": 1, "pad": "x" * JSON_BODY_LIMIT}).encode()
    headers = {**ADMIN, "If-Match": "0", "Content-Type": "application/json"}

    declared = await http.put(f"/v1/stock/{sku}/main", content=big, headers=headers)
    problem = assert_problem(declared, 413, "payload-too-large")
    assert problem["limit"] == JSON_BODY_LIMIT

    async def chunks():
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = await http.put(f"/v1/stock/{sku}/main", content=chunks(), headers=headers)
    assert_problem(streamed, 413, "payload-too-large")
    assert await store.get_many([sku]) == {}


async def test_a_json_route_refuses_other_media_types_without_a_500(http, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    response = await http.put(
        f"/v1/stock/{sku}/main",
        content=b"on_hand=5",
        headers={**ADMIN, "If-Match": "0", "Content-Type": "text/plain"},
    )
    assert_problem(response, 422, "invalid-input")
    response = await http.put(
        f"/v1/stock/{sku}/main", content=b"\xff\xfe", headers={**ADMIN, "If-Match": "0"}
    )
    assert response.status_code == 422, response.text
