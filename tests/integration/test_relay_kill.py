"""Kill the relay mid-delivery: no event is lost, each arrives at least once, in order per stock row.

The relays are real `invsaga relay` processes. The first is SIGKILLed while the receiver holds one of
its requests open; more stock changes land while no relay runs; then two relays start at once, and
exactly one per source may deliver, so the consumer still sees every stock row's versions in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import text

from invsaga.events.webhooks import register_webhook
from tests.helpers import assert_clean_audit, request, skus_on_shard, stock_up
from tests.integration.webhook_receiver import WebhookReceiver, unique_in_order

ROOT = Path(__file__).resolve().parents[2]


def relay_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSAGA_")}
    return {
        **env,
        "INVSAGA_SHARD_DSNS": ",".join(settings.shard_dsns),
        "INVSAGA_CORE_DSN": settings.core_dsn,
        "INVSAGA_RELAY_POLL_SECONDS": "0.05",
        "INVSAGA_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
        "INVSAGA_WEBHOOK_RETRY_MAX_SECONDS": "0.5",
        "INVSAGA_WEBHOOK_TIMEOUT_SECONDS": "5",
        "INVSAGA_DATA_DIR": "/nonexistent",
        "PYTHONFAULTHANDLER": "1",
    }


def start_relay(settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "invsaga", "relay"],
        cwd=ROOT,
        env=relay_env(settings),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def wait_until(predicate, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture
async def no_webhooks(databases):
    async with databases.core.begin() as conn:
        await conn.execute(text("DELETE FROM webhooks"))


async def test_a_relay_killed_mid_delivery_loses_nothing_and_keeps_the_order(
    store, settings, databases, no_webhooks, tmp_path
):
    skus = skus_on_shard(store.router, 0, 2) + skus_on_shard(store.router, 1, 2)
    log = tmp_path / "relays.log"
    with WebhookReceiver(delay=0.15) as receiver:
        hook = await register_webhook(
            databases.core,
            url=receiver.url,
            event_types=["stock.changed", "stock.sold_out", "stock.back_in_stock"],
        )
        for sku in skus:
            await stock_up(store, sku, 10)
        first = start_relay(settings, log)
        try:

            async def churn(tag: str) -> None:
                for sku in skus:
                    shard = store.router.shard_of(sku)
                    await store.reserve(shard, request(f"{tag}-{sku}", (sku, 2)))
                    await store.commit(shard, f"{tag}-{sku}")

            await churn("before")
            await wait_until(
                lambda: len(receiver.accepted) >= 3 and receiver.in_flight, within=60, what="deliveries"
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_in_flight = receiver.arrived[-1].event["id"]
        finally:
            if first.poll() is None:
                first.kill()
        await churn("between")  # nothing relays these until the next relays start
        receiver.delay = 0.0
        relays = [start_relay(settings, log), start_relay(settings, log)]
        try:
            # Each relay says, per source, whether it leads or stands by; both have started once all have.
            sources = len(databases.shards) + 1
            await wait_until(
                lambda: (
                    sum(log.read_text().count(word) for word in ("relay active for", "on standby"))
                    >= 3 * sources
                ),
                within=60,
                what="both relays started",
            )
            final = {lv.sku: lv for sku in skus for lv in await store.get(sku)}

            def caught_up() -> bool:
                last: dict[str, int] = {}
                for e in receiver.events():
                    if e["type"] == "stock.changed":
                        last[e["data"]["sku"]] = max(last.get(e["data"]["sku"], 0), e["data"]["version"])
                return all(last.get(sku) == final[sku].version for sku in skus)

            await wait_until(
                caught_up, within=90, what=f"all events delivered (log: {log.read_text()[-2000:]})"
            )
        finally:
            for process in relays:
                process.send_signal(signal.SIGTERM)
            codes = [process.wait(30) for process in relays]
        assert codes == [0, 0], (codes, log.read_text()[-3000:])

    events = unique_in_order(receiver.events())
    assert killed_in_flight in {e["id"] for e in events}
    assert all(d.signed_by(hook.secret) and d.event_id_header == d.event["id"] for d in receiver.accepted)
    by_source: dict[str, list[int]] = defaultdict(list)
    by_sku: dict[str, list[int]] = defaultdict(list)
    versions: dict[str, list[int]] = defaultdict(list)
    for event in events:
        by_source[event["source"]].append(event["sequence"])
        by_sku[event["data"]["sku"]].append(event["sequence"])
        if event["type"] == "stock.changed":
            versions[event["data"]["sku"]].append(event["data"]["version"])
    for seqs in by_sku.values():
        assert seqs == sorted(seqs), "a SKU's events arrived out of order"
    for seqs in by_source.values():
        assert sorted(seqs) == list(range(min(seqs), min(seqs) + len(seqs))), (
            "an event of the source is missing"
        )
    for sku in skus:
        assert versions[sku] == list(range(1, final[sku].version + 1))
        [last] = [e for e in events if e["type"] == "stock.changed" and e["data"]["sku"] == sku][-1:]
        assert (last["data"]["on_hand"], last["data"]["reserved"]) == (
            final[sku].on_hand,
            final[sku].reserved,
        )
    await assert_clean_audit(databases)


async def test_one_relay_per_source_is_active_and_a_standby_takes_over(settings, databases):
    from invsaga.events.metrics import RelayMetrics
    from invsaga.events.outbox import sources_of
    from invsaga.events.relay import Relay

    names = [s.name for s in sources_of(databases)]
    fast = settings.model_copy(update={"relay_poll_seconds": 0.05})
    metrics = [RelayMetrics(), RelayMetrics()]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [
        asyncio.create_task(Relay(fast, databases, metrics=m).run(s))
        for m, s in zip(metrics, stops, strict=True)
    ]

    def active(m: RelayMetrics) -> set[str]:
        return {n for n in names if m.registry.get_sample_value("invsaga_relay_active", {"source": n}) == 1}

    try:
        await wait_until(
            lambda: len(active(metrics[0])) + len(active(metrics[1])) == len(names), within=20, what="leaders"
        )
        assert active(metrics[0]).isdisjoint(active(metrics[1]))
        await asyncio.sleep(0.5)  # the standbys keep asking, and still do not lead
        assert len(active(metrics[0])) + len(active(metrics[1])) == len(names)
        stops[0].set()
        await tasks[0]
        await wait_until(lambda: active(metrics[1]) == set(names), within=20, what="the standby taking over")
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
