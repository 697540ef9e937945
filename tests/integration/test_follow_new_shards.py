"""Processes that started before a shard was added follow it: the event relay relays its outbox, and
the sold-out hint listens on it.

The fleet is this module's own (three servers: two shards listed in INVSAGA_SHARD_DSNS, a third
registered while the relay and the hint already run), so the session's slot map is never touched. The
relay is ``invsaga relay``'s own entry point (``run_relay``, which opens its own watched Databases);
the hint is wired as the API process wires it (``follow_serving_shards``). Neither is told about the
new shard: they learn of it from the registry, as a running process would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from invsaga.api.deps import follow_serving_shards, serving_shard_urls
from invsaga.dev.postgres import PgFleet
from invsaga.domain.events import shard_source
from invsaga.events.relay import run_relay
from invsaga.events.webhooks import register_webhook
from invsaga.settings import load_settings, to_asyncpg_url
from invsaga.store.databases import Databases, migrate_all, migrate_shard
from invsaga.store.registry import register_shard
from invsaga.store.routing import slot_of
from invsaga.store.slot_move import SlotMover
from invsaga.store.sold_out import SoldOutHint
from invsaga.store.stock import StockStore
from tests.helpers import request, stock_up
from tests.integration.webhook_receiver import WebhookReceiver, unique_in_order

STOCK_TYPES = ["stock.changed", "stock.sold_out", "stock.back_in_stock"]


@dataclass
class Grown:
    """Two shards at start; a third added and given ``moved`` slots after the relay and hint started."""

    databases: Databases  # the operator's: it registers and moves; the relay has its own
    api_databases: Databases  # the API process' (watched), which the hint follows
    store: StockStore
    receiver: WebhookReceiver
    hint: SoldOutHint
    new_shard: int
    moved: set[int]
    #: A SKU stocked on shard 0 before the move, whose slot then moved to the new shard.
    carried: str


async def until(predicate: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not reached within {within}s: {what}"
        await asyncio.sleep(0.02)


def skus_in(slots: set[int], prefix: str, count: int) -> list[str]:
    found = [f"{prefix}-{n}" for n in range(100_000) if slot_of(f"{prefix}-{n}") in slots]
    return found[:count]


@pytest.fixture(scope="module")
async def grown(three_servers: PgFleet) -> AsyncIterator[Grown]:
    dsns = three_servers.shard_dsns
    settings = load_settings(
        shard_dsns=",".join(dsns[:2]),
        core_dsn=three_servers.core_dsn,
        pool_size=4,
        relay_poll_seconds=0.05,
        webhook_retry_base_seconds=0.05,
        webhook_retry_max_seconds=0.4,
    )
    await migrate_all(settings)
    databases = await Databases.open(settings)
    store = StockStore(databases)
    moved = set([slot for slot, owner in enumerate(databases.router.slots) if owner == 0][:8])
    (carried,) = skus_in(moved, "carried", 1)
    stop = asyncio.Event()
    with WebhookReceiver() as receiver:
        await register_webhook(databases.core, url=receiver.url, event_types=STOCK_TYPES)
        relay = asyncio.create_task(run_relay(settings, stop))
        api_databases = await Databases.open(settings, watch=True)
        hint = SoldOutHint(serving_shard_urls(api_databases), max_age_seconds=60)
        await hint.start()
        follower = asyncio.create_task(follow_serving_shards(hint, api_databases))
        try:
            await hint.wait_listening()
            # The relay runs (and delivers shard 0's events) before the shard exists.
            await stock_up(store, carried, 2)
            await receiver.wait_for(lambda events: any(e["data"]["sku"] == carried for e in events))

            index = await register_shard(databases.core, dsns[2])
            await migrate_shard(to_asyncpg_url(dsns[2]), index)
            await databases.refresh()
            mover = SlotMover(databases)
            (move,) = await mover.plan(sorted(moved), index)
            await mover.run(move.move_id)
            await databases.refresh()
            assert store.router.shard_of(carried) == index
            yield Grown(databases, api_databases, store, receiver, hint, index, moved, carried)
        finally:
            stop.set()
            follower.cancel()
            await asyncio.gather(relay, follower, return_exceptions=True)
            await hint.close()
            await api_databases.close()
            await databases.close()


async def test_the_relay_relays_a_shard_added_after_it_started(grown: Grown) -> None:
    g = grown
    new_source = shard_source(g.new_shard)
    await stock_up(g.store, g.carried, 3)
    events = await g.receiver.wait_for(
        lambda events: any(e["source"] == new_source for e in events), within=30
    )
    from_new = [e for e in unique_in_order(events) if e["source"] == new_source]
    changed = [e for e in from_new if e["type"] == "stock.changed"]
    assert [(e["data"]["sku"], e["data"]["on_hand"], e["data"]["version"]) for e in changed] == [
        (g.carried, 5, 2)
    ], "the receipt on the new shard carries on the row the move brought"
    assert [e["sequence"] for e in from_new] == list(range(1, len(from_new) + 1))
    async with g.databases.shards[g.new_shard].connect() as conn:
        assert not await conn.scalar(text("SELECT count(*) FROM stock_events WHERE seq IS NULL"))
        # One relay leads the new shard, as on every other: it holds the shard's relay lock.
        assert (
            await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"))
            == 1
        )


async def test_the_hint_listens_on_a_shard_added_after_it_started(grown: Grown) -> None:
    g = grown
    await until(lambda: g.hint.followed == 3, within=10, what="the hint following the new shard")
    await g.hint.wait_listening()
    (sku,) = skus_in(g.moved, "hinted", 1)
    assert g.store.router.shard_of(sku) == g.new_shard
    before = g.hint.token(sku)
    await stock_up(g.store, sku, 1)
    # Only the new shard's notification can change this SKU's token: the hint hears that shard.
    await until(lambda: g.hint.token(sku) != before, within=5, what="the new shard's notification")
    token = g.hint.token(sku)
    await g.store.reserve(g.new_shard, request("follow-1", (sku, 1)))
    g.hint.mark_sold_out(sku, "main", token)
    assert g.hint.sold_out(sku, "main")
    # A shard it follows but does not hear yet (here: one that never answers) silences the hint.
    unheard = make_url("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    g.hint.follow([*serving_shard_urls(g.api_databases), unheard])
    assert not g.hint.sold_out(sku, "main") and not g.hint.any_sold_out()
    g.hint.follow(serving_shard_urls(g.api_databases))
    assert g.hint.sold_out(sku, "main")
    await g.store.release(g.new_shard, "follow-1")
    await until(lambda: not g.hint.sold_out(sku, "main"), within=5, what="stock back on the new shard")


async def test_the_hint_forgets_what_it_learned_when_the_routing_changes(grown: Grown) -> None:
    g = grown
    await until(lambda: g.hint.followed == 3, within=10, what="the hint following the new shard")
    await g.hint.wait_listening()
    (sku,) = skus_in(g.moved, "stale", 1)
    g.hint.mark_sold_out(sku, None, g.hint.token(sku))
    assert g.hint.sold_out(sku, None)
    mover = SlotMover(g.databases)
    (move,) = await mover.plan([slot_of(sku)], 0)  # the SKU moves back: the mark came from elsewhere
    await mover.run(move.move_id)
    await until(lambda: not g.hint.sold_out(sku, None), within=5, what="the hint forgetting")
