"""The auth matrix: every route with no key, an unknown key, the wrong scope and the right scope.

The rule (invsaga/api/auth.py): reading stock takes either scope; checkouts take ``checkout``; changing stock
takes ``admin``; health, readiness, metrics and the docs take none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text

from invsaga.api.app import create_app
from invsaga.api.auth import ApiKeys, Scope, generate_dev_keys, hash_key, key_entry
from invsaga.domain.errors import ConfigurationError
from tests.helpers import in_catalog, skus_on_shard, stock_up, stocked_sku
from tests.integration.api_fixtures import (
    ADMIN_KEY,
    BOTH_KEY,
    CHECKOUT_KEY,
    UNKNOWN_KEY,
    assert_problem,
    bearer,
    checkout_body,
    idempotency,
)

Call = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[httpx.Response]]


@dataclass
class Route:
    method: str
    path: str
    scopes: frozenset[Scope] | None  # None: public
    ok: int
    call: Call


async def wait_for_order(databases, order_id: str) -> None:
    """The checkout records its order in its first step; GET /v1/orders/{id} needs the row."""
    for _ in range(200):
        async with databases.core.connect() as conn:
            if await conn.scalar(text("SELECT 1 FROM orders WHERE order_id = :id"), {"id": order_id}):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} was never recorded")


async def build_routes(store, databases, http, webhooks: list[str]) -> list[Route]:
    """Each route with a request that succeeds given the right scope; the ids of the webhooks it
    registers are appended to ``webhooks``."""
    sku = await stocked_sku(databases, store, 100)
    (fresh,) = skus_on_shard(store.router, 1, 1)
    await in_catalog(databases, fresh)
    running = checkout_body((sku, 1), token="tok_slow_3000")
    started = await http.post(
        "/v1/checkouts", json=running, headers={**bearer(CHECKOUT_KEY), **idempotency()}
    )
    assert started.status_code == 202, started.text
    await wait_for_order(databases, running["order_id"])
    reader, service, operator = frozenset(Scope), frozenset({Scope.CHECKOUT}), frozenset({Scope.ADMIN})

    async def cancel(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        # A fresh running checkout each time: once one is cancelled, it is too late to cancel it again.
        order = checkout_body((sku, 1), token="tok_slow_3000")
        begun = await client.post(
            "/v1/checkouts", json=order, headers={**bearer(CHECKOUT_KEY), **idempotency()}
        )
        assert begun.status_code == 202, begun.text
        return await client.post(f"/v1/checkouts/{order['order_id']}/cancel", headers=headers)

    async def put_product(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        # A new SKU each time, so each allowed call creates (201).
        body = {"name": "matrix mug", "price": "3.00"}
        return await client.put(f"/v1/products/NEW-{uuid.uuid4().hex[:8]}", json=body, headers=headers)

    async def post_webhook(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        body = {"url": "http://127.0.0.1:9/matrix", "event_types": ["stock.changed"]}
        response = await client.post("/v1/webhooks", json=body, headers=headers)
        if response.status_code == 201:
            webhooks.append(response.json()["id"])
        return response

    async def delete_webhook(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        # A fresh webhook each time: a deleted one is gone.
        created = await post_webhook(client, bearer(ADMIN_KEY))
        assert created.status_code == 201, created.text
        return await client.delete(f"/v1/webhooks/{created.json()['id']}", headers=headers)

    async def put_stock(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        version = next(lv.version for lv in await store.get(sku))
        return await client.put(
            f"/v1/stock/{sku}/main", json={"on_hand": 100}, headers={**headers, "If-Match": str(version)}
        )

    return [
        Route(
            "GET", "/v1/stock", reader, 200, lambda c, h: c.get("/v1/stock", params={"sku": sku}, headers=h)
        ),
        Route("GET", "/v1/stock/{sku}", reader, 200, lambda c, h: c.get(f"/v1/stock/{sku}", headers=h)),
        Route(
            "POST",
            "/v1/checkouts",
            service,
            202,
            lambda c, h: c.post(
                "/v1/checkouts", json=checkout_body((sku, 1)), headers={**h, **idempotency()}
            ),
        ),
        Route(
            "GET",
            "/v1/checkouts/{order_id}",
            service,
            200,
            lambda c, h: c.get(f"/v1/checkouts/{running['order_id']}", headers=h),
        ),
        Route("POST", "/v1/checkouts/{order_id}/cancel", service, 202, cancel),
        Route("PUT", "/v1/stock/{sku}/{location}", operator, 200, put_stock),
        Route(
            "POST",
            "/v1/stock/{sku}/{location}/receipts",
            operator,
            200,
            lambda c, h: c.post(
                f"/v1/stock/{fresh}/main/receipts", json={"quantity": 1}, headers={**h, **idempotency()}
            ),
        ),
        Route(
            "POST",
            "/v1/stock/import",
            operator,
            200,
            lambda c, h: c.post(
                "/v1/stock/import",
                content=f"sku,location,quantity\n{fresh},annex,3\n".encode(),
                headers={**h, "Content-Type": "text/csv"},
            ),
        ),
        Route("PUT", "/v1/products/{sku}", operator, 201, put_product),
        Route("GET", "/v1/products/{sku}", reader, 200, lambda c, h: c.get(f"/v1/products/{sku}", headers=h)),
        Route("GET", "/v1/products", reader, 200, lambda c, h: c.get("/v1/products", headers=h)),
        Route(
            "POST",
            "/v1/products/import",
            operator,
            200,
            lambda c, h: c.post(
                "/v1/products/import",
                content=f"sku,name,price,currency,active\n{fresh},fresh mug,4.00,USD,true\n".encode(),
                headers={**h, "Content-Type": "text/csv"},
            ),
        ),
        Route("GET", "/v1/orders", reader, 200, lambda c, h: c.get("/v1/orders", headers=h)),
        Route(
            "GET",
            "/v1/orders/{order_id}",
            reader,
            200,
            lambda c, h: c.get(f"/v1/orders/{running['order_id']}", headers=h),
        ),
        Route(
            "GET",
            "/v1/stock/{sku}/movements",
            reader,
            200,
            lambda c, h: c.get(f"/v1/stock/{sku}/movements", headers=h),
        ),
        Route("GET", "/v1/events", operator, 200, lambda c, h: c.get("/v1/events", headers=h)),
        Route("POST", "/v1/webhooks", operator, 201, post_webhook),
        Route("GET", "/v1/webhooks", operator, 200, lambda c, h: c.get("/v1/webhooks", headers=h)),
        Route("DELETE", "/v1/webhooks/{webhook_id}", operator, 204, delete_webhook),
        Route("GET", "/healthz", None, 200, lambda c, h: c.get("/healthz", headers=h)),
        Route("GET", "/readyz", None, 200, lambda c, h: c.get("/readyz", headers=h)),
        Route("GET", "/metrics", None, 200, lambda c, h: c.get("/metrics", headers=h)),
    ]


async def test_every_route_with_no_key_an_unknown_key_the_wrong_scope_and_the_right_one(
    http, api, store, databases, caplog
):
    caplog.set_level(logging.DEBUG)
    webhooks: list[str] = []
    try:
        await _walk_the_matrix(http, await build_routes(store, databases, http, webhooks), caplog)
    finally:
        async with databases.core.begin() as conn:
            await conn.execute(text("DELETE FROM webhooks WHERE id = ANY (:ids)"), {"ids": webhooks})


async def _walk_the_matrix(http, routes: list[Route], caplog) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in (await http.get("/openapi.json")).json()["paths"].items()
        for method in operations
    }
    assert {(r.method, r.path) for r in routes} == documented, "every route needs a row in this matrix"

    keys = {Scope.CHECKOUT: CHECKOUT_KEY, Scope.ADMIN: ADMIN_KEY}
    seen: list[httpx.Response] = []
    for route in routes:
        label = f"{route.method} {route.path}"
        if route.scopes is None:
            response = await route.call(http, {})
            assert response.status_code == route.ok, f"{label}: {response.text}"
            continue
        for headers in (
            {},
            bearer(UNKNOWN_KEY),
            {"Authorization": f"Basic {CHECKOUT_KEY}"},
            {"Authorization": "Bearer"},
        ):
            response = await route.call(http, headers)
            problem = assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer"), label
            seen.append(response)
            assert problem["instance"].startswith("/v1/"), label
        for scope, key in keys.items():
            response = await route.call(http, bearer(key))
            seen.append(response)
            if scope in route.scopes:
                assert response.status_code == route.ok, f"{label} with {scope}: {response.text}"
            else:
                assert_problem(response, 403, "forbidden")
        # A key listed under both scopes may call everything.
        response = await route.call(http, bearer(BOTH_KEY))
        assert response.status_code == route.ok, f"{label} with both scopes: {response.text}"

    for response in seen:
        for key in (CHECKOUT_KEY, ADMIN_KEY, UNKNOWN_KEY):
            assert key not in response.text and hash_key(key) not in response.text
    for key in (CHECKOUT_KEY, ADMIN_KEY, UNKNOWN_KEY, BOTH_KEY):
        assert key not in caplog.text and hash_key(key) not in caplog.text


async def test_a_forbidden_call_changes_nothing(http, store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    version = (await store.get(sku))[0].version
    response = await http.put(
        f"/v1/stock/{sku}/main",
        json={"on_hand": 1},
        headers={**bearer(CHECKOUT_KEY), "If-Match": str(version)},
    )
    assert_problem(response, 403, "forbidden")
    receipt = await http.post(
        f"/v1/stock/{sku}/main/receipts",
        json={"quantity": 9},
        headers={**bearer(CHECKOUT_KEY), **idempotency()},
    )
    assert_problem(receipt, 403, "forbidden")
    body = checkout_body((sku, 1))
    refused = await http.post("/v1/checkouts", json=body, headers={**bearer(ADMIN_KEY), **idempotency()})
    assert_problem(refused, 403, "forbidden")
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved, level.version) == (5, 0, version)


# --- keys and their configuration ---------------------------------------------------------------------


def test_entries_are_parsed_and_a_bad_one_is_refused_without_echoing_it():
    raw = "isk_" + uuid.uuid4().hex
    keys = ApiKeys.parse(f" checkout:{hash_key(raw).upper()} , ,admin:{hash_key(raw)}")
    principal = keys.authenticate(raw)
    assert principal is not None and principal.scopes == frozenset(Scope)
    assert keys.authenticate(raw + "x") is None and keys.authenticate("") is None
    for bad in (f"checkout:{raw}", f"root:{hash_key(raw)}", hash_key(raw), f"admin:{hash_key(raw)[:-1]}"):
        with pytest.raises(ConfigurationError) as caught:
            ApiKeys.parse(f"admin:{hash_key('x')},{bad}")
        assert "entry 2" in caught.value.message and raw not in caught.value.message


def test_the_api_refuses_to_start_without_keys(saga_settings):
    with pytest.raises(ConfigurationError, match="INVSAGA_API_KEYS"):
        create_app(saga_settings.model_copy(update={"api_keys": " "}))


def test_dev_keys_are_one_per_scope_private_and_stable(tmp_path):
    first = generate_dev_keys(tmp_path)
    again = generate_dev_keys(tmp_path)
    assert first.keys == again.keys and set(first.keys) == set(Scope)
    assert stat.S_IMODE(os.stat(tmp_path / "api-keys.json").st_mode) == 0o600
    keys = ApiKeys.parse(first.setting)
    for scope, raw in first.keys.items():
        principal = keys.authenticate(raw)
        assert principal is not None and principal.scopes == {scope}
    assert all(raw not in first.setting for raw in first.keys.values())
    assert first.setting == ",".join(key_entry(s, k) for s, k in first.keys.items())
    (tmp_path / "api-keys.json").write_text("{not json")
    assert generate_dev_keys(tmp_path).keys != first.keys
