"""An order's holds on one shard move together: a pinned hold never expires, and a commit takes every
line of the order or none. These are the store halves of invariant 5 (confirmed means committed)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from invsaga.domain.errors import ReservationClosed
from invsaga.domain.stock import HoldState, StockLine
from tests.helpers import assert_clean_audit, request, skus_on_shard, stock_up

pytestmark = pytest.mark.usefixtures("clean_shards")


async def _backdate(databases, shard: int, order_id: str) -> None:
    """Put the order's holds past their TTL without waiting for it."""
    async with databases.shards[shard].begin() as conn:
        await conn.execute(
            text("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE order_id = :o"),
            {"o": order_id},
        )


async def _states(databases, shard: int, order_id: str) -> dict[str, str]:
    async with databases.shards[shard].connect() as conn:
        rows = await conn.execute(
            text("SELECT sku, state FROM reservations WHERE order_id = :o"), {"o": order_id}
        )
        return {row.sku: row.state for row in rows}


async def test_a_partly_expired_order_commits_nothing(store, databases):
    """Regression: the sweeper expired one line of two, and commit sold the other one as the order."""
    a, b = skus_on_shard(store.router, 0, 2)
    await stock_up(store, a, 5)
    await stock_up(store, b, 5)
    await store.reserve(0, request("o-part", (a, 2), (b, 3)))
    await _backdate(databases, 0, "o-part")
    assert await store.expire(0, limit=1) == 1

    with pytest.raises(ReservationClosed) as refused:
        await store.commit(0, "o-part")
    assert "expired" in str(refused.value)
    states = await _states(databases, 0, "o-part")
    assert sorted(states.values()) == ["expired", "held"], "commit must not move any line"
    levels = {lv.sku: lv for lvs in (await store.get_many([a, b])).values() for lv in lvs}
    assert levels[a].on_hand == levels[b].on_hand == 5
    await assert_clean_audit(databases)


async def test_pinned_holds_never_expire_and_commit_later(store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 4)
    await store.reserve(1, request("o-pin", (sku, 3)))
    pinned = await store.pin(1, "o-pin", [StockLine(sku=sku, quantity=3)])
    assert pinned.state is HoldState.HELD and pinned.moved_lines == 1
    await _backdate(databases, 1, "o-pin")
    assert await store.expire_all(1) == 0
    committed = await store.commit(1, "o-pin")
    assert committed.state is HoldState.COMMITTED
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (1, 0)
    await assert_clean_audit(databases)


async def test_pin_is_refused_once_any_line_has_expired(store, databases):
    a, b = skus_on_shard(store.router, 0, 2)
    await stock_up(store, a, 5)
    await stock_up(store, b, 5)
    lines = [StockLine(sku=a, quantity=1), StockLine(sku=b, quantity=1)]
    await store.reserve(0, request("o-late", (a, 1), (b, 1)))
    await _backdate(databases, 0, "o-late")
    assert await store.expire(0, limit=1) == 1
    with pytest.raises(ReservationClosed):
        await store.pin(0, "o-late", lines)
    async with databases.shards[0].connect() as conn:
        pinned = await conn.scalar(
            text("SELECT count(*) FROM reservations WHERE order_id = 'o-late' AND pinned_at IS NOT NULL")
        )
    assert pinned == 0


async def test_pin_of_an_order_that_never_reserved_is_refused(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    with pytest.raises(ReservationClosed):
        await store.pin(0, "o-none", [StockLine(sku=sku, quantity=1)])


async def test_pin_and_commit_replay(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    lines = [StockLine(sku=sku, quantity=2)]
    await store.reserve(0, request("o-rp", (sku, 2)))
    await store.pin(0, "o-rp", lines)
    again = await store.pin(0, "o-rp", lines)
    assert again.state is HoldState.HELD
    await store.commit(0, "o-rp")
    assert (await store.pin(0, "o-rp", lines)).state is HoldState.COMMITTED
    assert (await store.commit(0, "o-rp")).moved_lines == 0
    [level] = await store.get(sku)
    assert level.on_hand == 3
    await assert_clean_audit(databases)


async def test_expiry_racing_pin_and_commit_never_sells_an_expired_unit(store, databases):
    """Many orders past their TTL; sweepers and checkouts (pin, then commit) race. Every order ends
    either wholly expired (pin refused, nothing committed) or wholly committed, never mixed."""
    skus = skus_on_shard(store.router, 0, 3)
    for sku in skus:
        await stock_up(store, sku, 1_000)
    orders = [f"o-race-{n}" for n in range(60)]
    line_sets = {
        order_id: [StockLine(sku=sku, quantity=1 + (n + i) % 3) for i, sku in enumerate(skus)]
        for n, order_id in enumerate(orders)
    }
    for order_id in orders:
        outcome = await store.reserve(
            0, request(order_id, *((ln.sku, ln.quantity) for ln in line_sets[order_id]))
        )
        assert outcome.state is HoldState.HELD
    async with databases.shards[0].begin() as conn:
        await conn.execute(text("UPDATE reservations SET expires_at = now() - interval '1 second'"))

    async def checkout(order_id: str) -> str:
        try:
            await store.pin(0, order_id, line_sets[order_id])
        except ReservationClosed:
            return "lost"
        await store.commit(0, order_id)
        return "sold"

    async def sweep() -> int:
        total = 0
        for _ in range(20):
            total += await store.expire(0, limit=2)
            await asyncio.sleep(0)
        return total

    results = await asyncio.gather(*(checkout(o) for o in orders), *(sweep() for _ in range(4)))
    outcomes = dict(zip(orders, results[: len(orders)], strict=True))
    await store.expire_all(0)

    sold_units = {sku: 0 for sku in skus}
    for order_id in orders:
        states = set((await _states(databases, 0, order_id)).values())
        if outcomes[order_id] == "sold":
            assert states == {"committed"}, (order_id, states)
            for line in line_sets[order_id]:
                sold_units[line.sku] += line.quantity
        else:
            assert "committed" not in states, (order_id, states)
    levels = {lv.sku: lv for lvs in (await store.get_many(skus)).values() for lv in lvs}
    for sku in skus:
        assert levels[sku].on_hand == 1_000 - sold_units[sku]
        assert levels[sku].reserved == 0
    await assert_clean_audit(databases)
