"""Webhooks: registration over HTTP, and deliveries by a relay in this process to a loopback receiver:
signed, retried with backoff, in sequence order per SKU, and matching the stock they describe."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text

from invsaga.domain.stock import HoldState
from invsaga.events.dispatcher import Dispatcher
from invsaga.events.metrics import RELAY_METRICS
from invsaga.events.outbox import sources_of
from invsaga.events.webhooks import register_webhook
from tests.helpers import assert_clean_audit, catalog, request, skus_on_shard, stock_up
from tests.integration.api_fixtures import (
    ADMIN,
    CHECKOUT,
    assert_problem,
    checkout_body,
    idempotency,
    wait_until_terminal,
)
from tests.integration.webhook_receiver import WebhookReceiver, unique_in_order
from workers.relay import running_relay

STOCK_TYPES = ["stock.changed", "stock.sold_out", "stock.back_in_stock"]


@pytest.fixture
async def no_webhooks(databases):
    """Webhooks of earlier tests would point at receivers that are gone."""
    async with databases.core.begin() as conn:
        await conn.execute(text("DELETE FROM webhooks"))


def relay_settings(settings):
    return settings.model_copy(
        update={
            "relay_poll_seconds": 0.05,
            "webhook_retry_base_seconds": 0.05,
            "webhook_retry_max_seconds": 0.4,
        }
    )


@asynccontextmanager
async def relay(settings, databases):
    async with running_relay(relay_settings(settings), databases):
        yield


def assert_ordered_per_stock_row(events):
    """Per SKU, seqs only grow; per SKU and location, versions only grow (stock.changed)."""
    by_sku = defaultdict(list)
    versions = defaultdict(list)
    for event in events:
        by_sku[event["data"]["sku"]].append(event["sequence"])
        if event["type"] == "stock.changed":
            versions[(event["data"]["sku"], event["data"]["location"])].append(event["data"]["version"])
    for seqs in by_sku.values():
        assert seqs == sorted(seqs)
    for row_versions in versions.values():
        assert row_versions == sorted(row_versions) and len(set(row_versions)) == len(row_versions)
    return versions


async def test_register_list_and_delete_a_webhook_over_http(http, no_webhooks):
    created = await http.post(
        "/v1/webhooks",
        headers=ADMIN,
        json={"url": "https://erp.example.com/h", "event_types": ["stock.changed"]},
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and hook["event_types"] == ["stock.changed"]
    listed = (await http.get("/v1/webhooks", headers=ADMIN)).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

    mine = await http.post(
        "/v1/webhooks",
        headers=ADMIN,
        json={"url": "http://127.0.0.1:9/x", "event_types": ["order.confirmed"], "secret": "s" * 20},
    )
    assert mine.json()["secret"] == "s" * 20

    assert (await http.delete(f"/v1/webhooks/{hook['id']}", headers=ADMIN)).status_code == 204
    assert_problem(await http.delete(f"/v1/webhooks/{hook['id']}", headers=ADMIN), 404, "webhook-not-found")
    for bad in (
        {"url": "ftp://x.example/h", "event_types": ["stock.changed"]},
        {"url": "https://x.example/h", "event_types": ["stock.exploded"]},
        {"url": "https://x.example/h", "event_types": []},
        {"url": "https://x.example/h", "event_types": ["stock.changed"], "secret": "short"},
    ):
        assert_problem(await http.post("/v1/webhooks", headers=ADMIN, json=bad), 422, "invalid-input")
    assert_problem(await http.get("/v1/webhooks", headers=CHECKOUT), 403, "forbidden")
    assert [h["id"] for h in (await http.get("/v1/webhooks", headers=ADMIN)).json()["webhooks"]] == [
        mine.json()["id"]
    ]


async def test_the_feed_over_http_takes_admin_keys_and_refuses_a_bad_cursor(http, store, settings, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    async with relay(settings, databases):
        cursor = None
        while True:  # to the end of the feed
            page = (
                await http.get("/v1/events", headers=ADMIN, params={"limit": 1000, "after": cursor})
            ).json()
            cursor = page["next_cursor"]
            if not page["events"]:
                break
        await stock_up(store, sku, 3)
        found: list[dict] = []
        for _ in range(100):
            params = {"after": cursor, "types": ["stock.changed", "stock.sold_out"]}
            page = (await http.get("/v1/events", headers=ADMIN, params=params)).json()
            found += page["events"]
            cursor = page["next_cursor"]
            if found:
                break
            await asyncio.sleep(0.05)
    [event] = found
    assert event["type"] == "stock.changed" and event["id"] == f"{event['source']}-{event['sequence']}"
    assert event["data"] == {
        "sku": sku,
        "location": "main",
        "on_hand": 3,
        "reserved": 0,
        "available": 3,
        "version": 1,
        "reason": "receive",
        "reference": "receipt",
    }
    assert_problem(await http.get("/v1/events", headers=ADMIN, params={"after": "%%"}), 422, "invalid-input")
    assert_problem(await http.get("/v1/events", headers=CHECKOUT), 403, "forbidden")
    assert_problem(
        await http.get("/v1/events", headers=ADMIN, params={"types": "nope"}), 422, "invalid-input"
    )


async def test_deliveries_are_signed_retried_and_never_pass_a_failed_event(
    store, settings, databases, no_webhooks
):
    (sku,) = skus_on_shard(store.router, 1, 1)
    with WebhookReceiver(fail_next=3) as receiver:
        hook = await register_webhook(databases.core, url=receiver.url, event_types=STOCK_TYPES)
        async with relay(settings, databases):
            await stock_up(store, sku, 2)
            await store.reserve(1, request("wh-1", (sku, 2)))
            await store.release(1, "wh-1")
            events = await receiver.wait_for(lambda got: len(unique_in_order(got)) >= 6)
    # The first event was refused three times, then delivered before anything after it.
    assert [d.event["id"] for d in receiver.refused] == [events[0]["id"]] * 3
    assert [(e["type"], e["data"]["reason"]) for e in events] == [
        ("stock.changed", "receive"),
        ("stock.back_in_stock", "receive"),
        ("stock.changed", "reserve"),
        ("stock.sold_out", "reserve"),
        ("stock.changed", "release"),
        ("stock.back_in_stock", "release"),
    ]
    assert_ordered_per_stock_row(events)
    for delivery in receiver.accepted + receiver.refused:
        assert delivery.signed_by(hook.secret)
        assert not delivery.signed_by("whsec_another")
        assert delivery.event_id_header == delivery.event["id"]


async def test_a_checkout_delivers_its_stock_and_order_events_to_the_webhooks_that_want_them(
    http, api, store, databases, settings, no_webhooks
):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await catalog(databases, store, (sku, 5))
    with WebhookReceiver() as stock_receiver, WebhookReceiver() as order_receiver:
        await register_webhook(databases.core, url=stock_receiver.url, event_types=STOCK_TYPES)
        await register_webhook(databases.core, url=order_receiver.url, event_types=["order.confirmed"])
        async with relay(settings, databases):
            body = checkout_body((sku, 2))
            started = await http.post("/v1/checkouts", headers={**CHECKOUT, **idempotency()}, json=body)
            assert started.status_code in (200, 201, 202), started.text
            assert (await wait_until_terminal(http, body["order_id"]))["status"] == "CONFIRMED"
            [order] = await order_receiver.wait_for(lambda got: len(got) >= 1)
            stock = await stock_receiver.wait_for(
                lambda got: any(
                    e["data"].get("reason") == "commit" for e in got if e["data"].get("sku") == sku
                )
            )
    assert order["type"] == "order.confirmed" and order["source"] == "core"
    assert order["data"]["order_id"] == body["order_id"] and order["data"]["status"] == "confirmed"
    mine = [
        (e["data"]["reason"], e["data"]["on_hand"], e["data"]["reserved"])
        for e in stock
        if e["type"] == "stock.changed" and e["data"]["sku"] == sku
    ]
    # The receipt happened before the webhooks were registered: they get what happened since.
    assert mine == [("reserve", 5, 2), ("commit", 3, 0)]
    assert all(e["type"].startswith("stock.") for e in stock)


async def test_racing_stock_changes_deliver_events_whose_last_state_is_the_stock(
    store, settings, databases, no_webhooks
):
    skus = skus_on_shard(store.router, 0, 3) + skus_on_shard(store.router, 1, 2)
    with WebhookReceiver() as receiver:
        await register_webhook(databases.core, url=receiver.url, event_types=["stock.changed"])
        for sku in skus:
            await stock_up(store, sku, 40)
        async with relay(settings, databases):

            async def buyer(n: int) -> None:
                sku = random.choice(skus)
                shard = store.router.shard_of(sku)
                order = f"race-{n}-{uuid.uuid4().hex[:6]}"
                outcome = await store.reserve(shard, request(order, (sku, random.randint(1, 3))))
                if outcome.state is not HoldState.HELD:
                    return
                if n % 3 == 0:
                    await store.release(shard, order)
                else:
                    await store.commit(shard, order)
                if n % 10 == 0:
                    await store.receive(sku, "main", 5, idempotency_key=f"restock-{n}")

            await asyncio.gather(*(buyer(n) for n in range(120)))
            levels = {lv.sku: lv for sku in skus for lv in await store.get(sku)}
            final = {sku: levels[sku].version for sku in skus}

            def caught_up(got):
                last = {}
                for e in got:
                    last[e["data"]["sku"]] = max(last.get(e["data"]["sku"], 0), e["data"]["version"])
                return all(last.get(sku) == final[sku] for sku in skus)

            events = unique_in_order(await receiver.wait_for(caught_up, within=60))
    mine = [e for e in events if e["data"]["sku"] in skus]
    versions = assert_ordered_per_stock_row(mine)
    for sku in skus:
        # One event per version, none missing; the last one is the stock as it is.
        assert versions[(sku, "main")] == list(range(1, final[sku] + 1))
        last = [e for e in mine if e["data"]["sku"] == sku][-1]["data"]
        level = levels[sku]
        assert (last["on_hand"], last["reserved"], last["available"]) == (
            level.on_hand,
            level.reserved,
            level.available,
        )
    await assert_clean_audit(databases)


async def test_old_events_are_pruned_only_once_every_webhook_has_passed_them(
    store, settings, databases, no_webhooks
):
    a, b = skus_on_shard(store.router, 0, 2)

    async def kept(sku: str) -> int:
        async with databases.shards[0].connect() as conn:
            return int(
                await conn.scalar(text("SELECT count(*) FROM stock_events WHERE sku = :s"), {"s": sku})
            )

    pruning = settings.model_copy(update={"event_retention_seconds": 0, "event_prune_every_seconds": 1})
    await stock_up(store, a, 1)
    with WebhookReceiver(fail_next=10_000) as receiver:
        hook = await register_webhook(databases.core, url=receiver.url, event_types=["stock.changed"])
        await stock_up(store, b, 1)
        async with relay(pruning, databases):
            await receiver_refused(receiver, b)
            await asyncio.sleep(1.5)  # a prune pass after the webhook's cursor exists, and a retry
            await until_zero(lambda: kept(a))  # on a slow machine, the pass may come later
        assert (await kept(a), await kept(b)) == (0, 2)  # b's events wait for the failing webhook
        labels = {"webhook": hook.id, "source": "shard-0"}
        assert RELAY_METRICS.registry.get_sample_value("invsaga_webhook_failed_attempts_total", labels) >= 2
        assert RELAY_METRICS.registry.get_sample_value("invsaga_webhook_lag_seconds", labels) > 0
        assert (
            RELAY_METRICS.registry.get_sample_value("invsaga_events_pruned_total", {"source": "shard-0"}) >= 1
        )
        async with databases.core.begin() as conn:
            await conn.execute(text("DELETE FROM webhooks WHERE id = :id"), {"id": hook.id})
        async with relay(pruning, databases):
            await until_zero(lambda: kept(b))
        assert await kept(b) == 0


async def test_events_written_just_before_a_webhook_are_pruned_even_if_its_cursor_started_first(
    store, settings, databases, no_webhooks
):
    """Regression (CI, 2026-12-02): a relay's deliverer can start a new webhook's cursor before its
    stamper has stamped the events written just before the registration. Those events then get seqs
    above the cursor. The webhook does not want them (they predate it), but while its first wanted
    event kept failing, the cursor stayed below them, and they were never pruned."""
    a, b = skus_on_shard(store.router, 0, 2)
    source = sources_of(databases)[0]

    async def kept(sku: str) -> int:
        async with source.engine.connect() as conn:
            return int(
                await conn.scalar(text("SELECT count(*) FROM stock_events WHERE sku = :s"), {"s": sku})
            )

    await stock_up(store, a, 1)  # no relay runs: unstamped
    with WebhookReceiver(fail_next=10_000) as receiver:
        await register_webhook(databases.core, url=receiver.url, event_types=["stock.changed"])
        async with httpx.AsyncClient() as client:
            first = Dispatcher(source, databases.core, client, relay_settings(settings), RELAY_METRICS)
            await first.run_once()  # the cursor starts before a's events have a seq
        await stock_up(store, b, 1)
        pruning = settings.model_copy(update={"event_retention_seconds": 0, "event_prune_every_seconds": 1})
        async with relay(pruning, databases):
            await receiver_refused(receiver, b)
            await until_zero(lambda: kept(a), within=10.0)
        assert (await kept(a), await kept(b)) == (0, 2)


async def until_zero(count: Callable[[], Awaitable[int]], within: float = 30.0) -> None:
    """Wait for prune passes (one a second here) to bring ``count`` to 0; the caller asserts it."""
    for _ in range(int(within / 0.2)):
        if not await count():
            return
        await asyncio.sleep(0.2)


async def receiver_refused(receiver: WebhookReceiver, sku: str) -> None:
    for _ in range(200):
        if any(d.event["data"]["sku"] == sku for d in receiver.refused):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no delivery of {sku} was attempted")
