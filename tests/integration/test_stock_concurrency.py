"""Many tasks race on a few SKUs; afterwards counts must be exact and every invariant must hold.

Each test runs twice: through direct per-call transactions and through the group-commit batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter

import pytest
from sqlalchemy import text

from invsaga.domain.errors import ReservationClosed
from invsaga.domain.stock import HoldState, StockLine
from tests.helpers import assert_clean_audit, request, skus_on_shard, stock_up

pytestmark = pytest.mark.usefixtures("clean_shards")


async def test_hot_sku_race_sells_exactly_the_stock(store, databases, reserve):
    (sku,) = skus_on_shard(store.router, 0, 1, prefix="HOT")
    await stock_up(store, sku, 100)
    outcomes = await asyncio.gather(*(reserve(0, request(f"hot-{n}", (sku, 1))) for n in range(500)))
    held = [o for o in outcomes if o.state is HoldState.HELD]
    short = [o for o in outcomes if o.state is None]
    assert len(held) == 100 and len(short) == 400
    assert all(o.shortages[0].available == 0 for o in short)
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (100, 100)
    report = await assert_clean_audit(databases)
    assert sum(s.held_reservations for s in report.shards) == 100


async def test_same_reservation_twenty_times_applies_once(store, databases, reserve):
    a, b = skus_on_shard(store.router, 1, 2)
    await stock_up(store, a, 50)
    await stock_up(store, b, 50)
    order = request("dup-1", (a, 3), (b, 4))
    outcomes = await asyncio.gather(*(reserve(1, order) for _ in range(20)))
    assert all(o.state is HoldState.HELD for o in outcomes)
    assert sum(not o.replayed for o in outcomes) == 1
    levels = await store.get_many([a, b])
    assert (levels[a][0].reserved, levels[b][0].reserved) == (3, 4)

    lines = list(order.lines)
    releases = await asyncio.gather(*(store.release(1, "dup-1", lines) for _ in range(20)))
    assert sum(r.moved_lines for r in releases) == 2
    levels = await store.get_many([a, b])
    assert (levels[a][0].reserved, levels[b][0].reserved) == (0, 0)
    await assert_clean_audit(databases)


async def test_orders_racing_to_grow_their_holds_take_each_new_line_once(store, databases, reserve):
    """Forty orders hold a line, then each asks again three times at once with a second line (as a
    place step does after a slot move brought that line here): twenty units of it, so exactly twenty
    orders grow and twenty are refused, each order one way, and the first holds stay."""
    a, b = skus_on_shard(store.router, 0, 2)
    await stock_up(store, a, 40)
    await stock_up(store, b, 20)
    orders = [f"grow-{n}" for n in range(40)]
    await asyncio.gather(*(reserve(0, request(o, (a, 1))) for o in orders))
    calls = [o for o in orders for _ in range(3)]
    random.shuffle(calls)
    outcomes = await asyncio.gather(*(reserve(0, request(o, (a, 1), (b, 1))) for o in calls))
    by_order: dict[str, set[str]] = {}
    for order, outcome in zip(calls, outcomes, strict=True):
        state = "short" if outcome.state is None else outcome.state.value
        by_order.setdefault(order, set()).add(state)
    grown = [o for o, states in by_order.items() if states == {"held"}]
    assert all(len(states) == 1 for states in by_order.values())  # each order answered one way
    assert len(grown) == 20 and sum(states == {"short"} for states in by_order.values()) == 20
    assert sum(not o.replayed for o in outcomes if o.state is HoldState.HELD) == 20
    levels = await store.get_many([a, b])
    assert (levels[a][0].reserved, levels[b][0].reserved) == (40, 20)
    async with databases.shards[0].connect() as conn:
        holders = (
            (await conn.execute(text("SELECT order_id FROM reservations WHERE sku = :b"), {"b": b}))
            .scalars()
            .all()
        )
    assert sorted(holders) == sorted(grown)
    await assert_clean_audit(databases)


async def test_same_commit_twenty_times_applies_once(store, databases, reserve):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    await reserve(0, request("dup-c", (sku, 4)))
    commits = await asyncio.gather(*(store.commit(0, "dup-c") for _ in range(20)))
    assert sum(c.moved_lines for c in commits) == 1
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (6, 0)
    await assert_clean_audit(databases)


async def test_opposite_line_orders_never_deadlock(store, databases, reserve):
    a, b, c = skus_on_shard(store.router, 0, 3, prefix="DL")
    for sku in (a, b, c):
        await stock_up(store, sku, 1000)

    async def one(n: int) -> None:
        lines = [(a, 1), (b, 1), (c, 1)]
        if n % 2:
            lines.reverse()
        await reserve(0, request(f"dl-{n}", *lines))
        if n % 3 == 0:
            await store.release(0, f"dl-{n}", [StockLine(sku=s, quantity=q) for s, q in lines])
        elif n % 3 == 1:
            await store.commit(0, f"dl-{n}")

    results = await asyncio.gather(*(one(n) for n in range(200)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    released = sum(1 for n in range(200) if n % 3 == 0)
    committed = sum(1 for n in range(200) if n % 3 == 1)
    held = 200 - released - committed
    levels = await store.get_many([a, b, c])
    for sku in (a, b, c):
        [level] = levels[sku]
        assert (level.on_hand, level.reserved) == (1000 - committed, held)
    await assert_clean_audit(databases)


async def test_random_mix_keeps_every_invariant(store, databases, reserve):
    rng = random.Random(20261129)
    skus = skus_on_shard(store.router, 0, 2, prefix="MIX") + skus_on_shard(store.router, 1, 2, prefix="MIX")
    initial = 40
    for sku in skus:
        await stock_up(store, sku, initial)
    received: Counter[str] = Counter()
    expired_lines = 0
    orders: dict[str, tuple[int, list[StockLine]]] = {}
    short_lived: set[str] = set()

    async def actor(actor_id: int) -> None:
        nonlocal expired_lines
        for step in range(25):
            roll = rng.random()
            if roll < 0.5 or not orders:
                shard = rng.randrange(2)
                picks = rng.sample(skus[shard * 2 : shard * 2 + 2], rng.randint(1, 2))
                order_id = f"mix-{actor_id}-{step}"
                lines = [StockLine(sku=s, quantity=rng.randint(1, 5)) for s in picks]
                orders[order_id] = (shard, lines)
                ttl = 1 if rng.random() < 0.2 else 900
                if ttl == 1:
                    short_lived.add(order_id)
                await reserve(shard, request(order_id, *((ln.sku, ln.quantity) for ln in lines), ttl=ttl))
            elif roll < 0.65:
                order_id = rng.choice(list(orders))
                shard, lines = orders[order_id]
                await store.release(shard, order_id, lines)
            elif roll < 0.8:
                order_id = rng.choice(list(orders))
                with contextlib.suppress(ReservationClosed):
                    await store.commit(orders[order_id][0], order_id)
            elif roll < 0.9:
                sku = rng.choice(skus)
                quantity = rng.randint(1, 10)
                await store.receive(sku, "main", quantity, idempotency_key=f"mix-rcv-{actor_id}-{step}")
                received[sku] += quantity
            else:
                await asyncio.sleep(0.05)
                moved = await store.expire(rng.randrange(2))
                expired_lines += moved  # read the total only after the await, or updates get lost

    await asyncio.gather(*(actor(n) for n in range(40)))
    await asyncio.sleep(1.1)
    for shard in (0, 1):
        expired_lines += await store.expire_all(shard)

    await assert_clean_audit(databases)
    held: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    expired_in_db = 0
    for engine in databases.shards:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT order_id, sku, quantity, state FROM reservations"))).all()
        for row in rows:
            if row.state == "held":
                assert row.order_id not in short_lived, f"{row.order_id} outlived its TTL"
                held[row.sku] += row.quantity
            elif row.state == "committed":
                sold[row.sku] += row.quantity
            elif row.state == "expired":
                expired_in_db += 1
    assert expired_lines > 0, "the mix must exercise expiry"
    assert expired_in_db == expired_lines
    levels = await store.get_many(skus)
    for sku in skus:
        [level] = levels[sku]
        assert level.on_hand == initial + received[sku] - sold[sku]
        assert level.reserved == held[sku]


async def test_the_batcher_sends_whatever_queued_during_a_commit_as_one_batch(store, databases):
    from invsaga.store.batching import ReservationBatcher

    (sku,) = skus_on_shard(store.router, 0, 1, prefix="HOT")
    await stock_up(store, sku, 1000)
    sizes: list[int] = []

    class Counting(type(store)):  # type: ignore[misc]
        async def reserve_batch(self, shard, requests):  # type: ignore[no-untyped-def]
            sizes.append(len(requests))
            return await super().reserve_batch(shard, requests)

    batcher = ReservationBatcher(Counting(databases), max_in_flight=1)
    try:
        alone = await batcher.reserve(0, request("solo", (sku, 1)))
        burst = await asyncio.gather(
            *(batcher.reserve(0, request(f"burst-{n}", (sku, 1))) for n in range(300))
        )
    finally:
        await batcher.aclose()

    # Nobody waits for company when nothing is in flight; a burst shares a handful of transactions.
    assert alone.held and sizes[0] == 1
    assert all(o.held for o in burst) and sum(sizes[1:]) == 300 and len(sizes) <= 4
    [level] = await store.get(sku)
    assert level.reserved == 301
    await assert_clean_audit(databases)
