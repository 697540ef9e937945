"""The sold-out answer given in front of FastAPI (invsaga/api/fast_refusal.py): the route's own answer,
one shared database read per batch of buyers, and never a refusal that contradicts a purchase, even when
the purchase's first attempt went through another API process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from invsaga.api import fresh_requests
from invsaga.api.app import create_app
from invsaga.api.deps import ApiDeps
from invsaga.api.fast_refusal import FastRefusalMiddleware
from invsaga.api.idempotency import fingerprint
from invsaga.api.models import CheckoutIn
from invsaga.api.sold_out import SoldOutScreen
from invsaga.client import CheckoutClient
from invsaga.domain.errors import ShardUnavailable
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.settings import Settings
from invsaga.store.idempotency import StoredResponse, claim_key, complete_key, unused_among
from invsaga.store.sold_out import SoldOutHint
from tests.helpers import assert_clean_audit, stocked_sku
from tests.integration.api_fixtures import (
    ADMIN,
    CHECKOUT,
    CHECKOUT_KEY,
    UNKNOWN_KEY,
    assert_problem,
    bearer,
    checkout_body,
    idempotency,
    worker_serving,
)


@dataclass
class ApiProcess:
    """One API process of several: its own app, hint and batcher; the databases are shared."""

    app: FastAPI
    deps: ApiDeps
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def api_process(settings: Settings, databases, store, temporal_client) -> AsyncIterator[ApiProcess]:  # type: ignore[no-untyped-def]
    hint = SoldOutHint(settings.shard_urls, max_age_seconds=60)
    await hint.start()
    await hint.wait_listening()
    client = CheckoutClient(temporal_client, task_queue=settings.task_queue)
    deps = ApiDeps(
        databases=databases, store=store, checkouts=client, sold_out=SoldOutScreen(client, hint, store)
    )
    app = create_app(settings, deps=deps)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60
        ) as http:
            yield ApiProcess(app, deps, http)
    finally:
        await hint.close()


@pytest.fixture
async def process(api, databases, store, temporal_client) -> AsyncIterator[ApiProcess]:  # type: ignore[no-untyped-def]
    async with api_process(api.settings, databases, store, temporal_client) as opened:
        yield opened


async def post(http: httpx.AsyncClient, body: dict, key: str, headers: dict = CHECKOUT) -> httpx.Response:
    return await http.post("/v1/checkouts", json=body, headers={**headers, **idempotency(key)})


async def sold_out_sku(process: ApiProcess, databases, store) -> str:  # type: ignore[no-untyped-def]
    """A SKU whose only unit another order holds, and a process whose hint has learned it is gone."""
    sku = await stocked_sku(databases, store, 1)
    shard = store.router.shard_of(sku)
    await store.reserve(
        shard,
        ReserveRequest(order_id=f"holder-{uuid.uuid4().hex[:8]}", lines=[StockLine(sku=sku, quantity=1)]),
    )
    # The route reads "0 available" for this buyer and teaches the hint.
    assert_problem(await post(process.http, checkout_body((sku, 1)), str(uuid.uuid4())), 409, "out-of-stock")
    assert process.deps.sold_out is not None and process.deps.sold_out.hint.sold_out(sku, None)
    return sku


async def idempotency_rows(databases, key: str) -> int:  # type: ignore[no-untyped-def]
    async with databases.core.connect() as conn:
        return await conn.scalar(
            text("SELECT count(*) FROM api_idempotency_keys WHERE idempotency_key = :k"), {"k": key}
        )


def route_only(settings: Settings, deps: ApiDeps) -> httpx.AsyncClient:
    """A client of the same app without the fast path in front: the route's own answers."""
    app = create_app(settings, deps=deps)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastRefusalMiddleware]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_a_sold_out_buyer_gets_the_routes_own_answer_from_in_front_of_it(
    api, process, databases, store
):
    sku = await sold_out_sku(process, databases, store)
    body = checkout_body((sku, 1))
    key = "fast-" + body["order_id"]
    asked = process.deps.fresh.asked

    fast = await post(process.http, body, key)
    async with route_only(api.settings, process.deps) as routes:
        route = await post(routes, body, key)

    assert process.deps.fresh.asked == asked + 1  # answered in front of the route, after one check
    problem = assert_problem(fast, 409, "out-of-stock")
    assert problem["fast_path"] is True and problem["instance"] == "/v1/checkouts"
    assert problem["shortages"] == [{"sku": sku, "location": "main", "requested": 1, "available": 0}]
    assert (fast.status_code, fast.content) == (route.status_code, route.content)
    assert dict(fast.headers) == dict(route.headers)
    assert "idempotent-replayed" not in fast.headers and "location" not in fast.headers
    assert await idempotency_rows(databases, key) == 0


def _bad_requests(sku: str) -> list[tuple[str, dict, bytes, int, str]]:
    """Requests for the sold-out SKU that the route refuses for another reason, as (what, headers,
    body, status, problem slug)."""
    good = json.dumps(checkout_body((sku, 1))).encode()
    zero = good.replace(b'"quantity": 1', b'"quantity": 0')
    basic = {"Authorization": f"Basic {CHECKOUT_KEY}"}
    json_body = {**idempotency(), "Content-Type": "application/json"}
    space = {"Idempotency-Key": "a b", "Content-Type": "application/json"}
    return [
        ("no API key", json_body, good, 401, "unauthorized"),
        ("unknown API key", {**bearer(UNKNOWN_KEY), **json_body}, good, 401, "unauthorized"),
        ("not a bearer key", {**basic, **json_body}, good, 401, "unauthorized"),
        ("admin scope", {**ADMIN, **json_body}, good, 403, "forbidden"),
        ("no key", {**CHECKOUT, "Content-Type": "application/json"}, good, 400, "idempotency-key-required"),
        ("a space in the key", {**CHECKOUT, **space}, good, 400, "idempotency-key-required"),
        ("malformed JSON", {**CHECKOUT, **json_body}, good[:-1], 422, "invalid-input"),
        ("quantity 0", {**CHECKOUT, **json_body}, zero, 422, "invalid-input"),
        ("not JSON", {**CHECKOUT, **idempotency(), "Content-Type": "text/plain"}, good, 422, "invalid-input"),
    ]


async def test_what_the_fast_path_does_not_refuse_gets_the_routes_error(process, databases, store):
    sku = await sold_out_sku(process, databases, store)
    asked = process.deps.fresh.asked
    for what, headers, content, status, slug in _bad_requests(sku):
        answer = await process.http.post("/v1/checkouts", content=content, headers=headers)
        assert answer.status_code == status, (what, answer.text)
        assert_problem(answer, status, slug)
    assert process.deps.fresh.asked == asked, "a request the route refuses otherwise reached the check"


async def test_a_retry_on_another_process_finds_its_checkout_not_the_sold_out_sign(
    api, store, databases, temporal_client, monkeypatch
):
    """The first attempt, on process A, claims the key and starts the checkout, but its decision does not
    come in time (503). The retry lands on process B, whose hint says the SKU is sold out (another buyer
    holds the unit at that moment) and which never saw the key: it must attach to the checkout, not
    refuse. An in-memory record of B's own keys would refuse it; the shared read does not."""
    from invsaga.api import checkouts

    monkeypatch.setattr(checkouts, "RESERVATION_TIMEOUT_SECONDS", 1.0)
    settings = api.settings.model_copy(update={"task_queue": f"idle-{uuid.uuid4()}"})
    sku = await stocked_sku(databases, store, 1)
    body = checkout_body((sku, 1))
    key = "retry-" + body["order_id"]
    shard = store.router.shard_of(sku)
    async with (
        api_process(settings, databases, store, temporal_client) as a,
        api_process(settings, databases, store, temporal_client) as b,
    ):
        assert_problem(await post(a.http, body, key), 503, "unavailable")

        other = ReserveRequest(
            order_id=f"other-{uuid.uuid4().hex[:8]}", lines=[StockLine(sku=sku, quantity=1)]
        )
        await store.reserve(shard, other)
        assert_problem(await post(b.http, checkout_body((sku, 1)), str(uuid.uuid4())), 409, "out-of-stock")
        assert b.deps.sold_out is not None and b.deps.sold_out.hint.sold_out(sku, None)
        asked = b.deps.fresh.asked

        retry = await post(b.http, body, key)

        assert b.deps.fresh.asked == asked + 1  # it was checked in front of the route, and let through
        assert retry.status_code != 409, f"the retry was refused while its checkout lives: {retry.text}"
        assert_problem(retry, 503, "unavailable")
        await store.release(shard, other.order_id)
        async with worker_serving(temporal_client, settings):
            monkeypatch.setattr(checkouts, "RESERVATION_TIMEOUT_SECONDS", 30.0)
            last = await post(b.http, body, key)
            assert last.status_code == 202, last.text
            result = await b.deps.checkouts.result(body["order_id"])
    assert result.status.value == "CONFIRMED"
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (0, 0)
    await assert_clean_audit(databases)


async def test_concurrent_buyers_share_reads_and_each_gets_its_own_answer(process, databases, store):
    """300 new buyers and 20 retries of keys that already answered, all at once: every new buyer is
    refused without a record, every retry gets its recorded answer, and the checks share reads."""
    sku = await sold_out_sku(process, databases, store)
    caller = process.app.state.api_keys.authenticate(CHECKOUT_KEY)
    recorded = []
    for n in range(20):
        body = checkout_body((sku, 1))
        key = f"done-{n}-{body['order_id']}"
        answer = StoredResponse(202, json.dumps({"order_id": body["order_id"], "n": n}))
        request_hash = fingerprint("POST /v1/checkouts", CheckoutIn.model_validate(body))
        assert (await claim_key(databases.core, caller.key_id, key, request_hash)).claimed
        await complete_key(databases.core, caller.key_id, key, request_hash, answer)
        recorded.append((body, key, answer))
    buyers = [(body := checkout_body((sku, 1)), "new-" + body["order_id"]) for _ in range(300)]
    asked, reads = process.deps.fresh.asked, process.deps.fresh.reads

    answers = await asyncio.gather(
        *(post(process.http, body, key) for body, key in buyers),
        *(post(process.http, body, key) for body, key, _ in recorded),
    )

    new, old = answers[:300], answers[300:]
    assert [a.status_code for a in new] == [409] * 300
    assert all(a.json()["fast_path"] is True and "idempotent-replayed" not in a.headers for a in new)
    assert [(a.status_code, a.text, a.headers.get("idempotent-replayed")) for a in old] == [
        (202, answer.body, "true") for _, _, answer in recorded
    ]
    assert process.deps.fresh.asked - asked == 320
    assert process.deps.fresh.reads - reads < 320 / 4, "the checks were not batched"
    async with databases.core.connect() as conn:
        written = await conn.scalar(
            text("SELECT count(*) FROM api_idempotency_keys WHERE idempotency_key = ANY (:keys)"),
            {"keys": [key for _, key in buyers]},
        )
    assert written == 0


async def test_one_read_answers_each_request_as_its_own_read_would(process, databases, store):
    """``unused_among`` against ``is_unused``'s rule: a claimed key (only for its principal), a recorded
    order (whatever the key), and a request repeated within the batch."""
    from invsaga.store.idempotency import is_unused

    sku = await stocked_sku(databases, store, 5)
    order_id = f"rec-{uuid.uuid4().hex[:8]}"
    async with databases.core.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO orders (order_id, customer_id, status, amount, currency, lines)"
                " VALUES (:o, 'c', 'pending', 1, 'USD', '[]')"
            ),
            {"o": order_id},
        )
    claimed = f"claimed-{uuid.uuid4()}"
    await claim_key(databases.core, "p1", claimed, "h")
    new = f"new-{uuid.uuid4()}"
    requests = [
        ("p1", new, f"o-{sku}-1"),
        ("p1", claimed, f"o-{sku}-2"),
        ("p2", claimed, f"o-{sku}-3"),
        ("p1", f"k-{uuid.uuid4()}", order_id),
        ("p1", new, f"o-{sku}-1"),
    ]

    together = await unused_among(databases.core_autocommit, requests)

    alone = [await is_unused(databases.core_autocommit, p, k, order_id=o) for p, k, o in requests]
    assert together == alone == [True, False, True, False, True]
    assert await unused_among(databases.core_autocommit, []) == []


async def test_a_failed_check_sends_the_buyer_to_the_route(process, databases, store, monkeypatch):
    sku = await sold_out_sku(process, databases, store)

    async def down(core, requests):  # type: ignore[no-untyped-def]
        raise ShardUnavailable("core database is unreachable", database="core")

    monkeypatch.setattr(fresh_requests, "unused_among", down)
    answers = await asyncio.gather(
        *(post(process.http, checkout_body((sku, 1)), str(uuid.uuid4())) for _ in range(5))
    )

    # The route's own read works, and gives the same refusal.
    assert [assert_problem(a, 409, "out-of-stock")["fast_path"] for a in answers] == [True] * 5


async def test_a_fast_refusal_counts_under_the_route_in_the_metrics(process, databases, store):
    sku = await sold_out_sku(process, databases, store)
    line = 'invsaga_api_requests_total{method="POST",route="/v1/checkouts",status="409"}'

    async def counted() -> float:
        exposition = (await process.http.get("/metrics")).text
        return sum(float(row.split()[-1]) for row in exposition.splitlines() if row.startswith(line))

    before = await counted()
    asked = process.deps.fresh.asked
    assert_problem(await post(process.http, checkout_body((sku, 1)), str(uuid.uuid4())), 409, "out-of-stock")
    assert process.deps.fresh.asked == asked + 1
    assert await counted() == before + 1
