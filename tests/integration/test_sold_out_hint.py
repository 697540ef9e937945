"""The sold-out fast path: it says "sold out" only after the database did, and forgets it as soon as
stock comes back."""

from __future__ import annotations

import asyncio
import time

import pytest

from invsaga.api.sold_out import SoldOutScreen
from invsaga.domain.checkout import CheckoutStatus, RejectReason
from invsaga.domain.stock import StockLine
from invsaga.store.sold_out import SoldOutHint
from tests.helpers import request, skus_on_shard, stock_up
from tests.integration.test_checkout_saga import catalog, levels, order

pytestmark = pytest.mark.usefixtures("clean_shards")


@pytest.fixture
async def hint(settings):
    hint = SoldOutHint(settings.shard_urls, max_age_seconds=30)
    await hint.start()
    await hint.wait_listening()
    try:
        yield hint
    finally:
        await hint.close()


async def _until(predicate, within: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def test_hint_learns_from_the_database_and_forgets_when_stock_returns(hint, store):
    (sku,) = skus_on_shard(store.router, 0, 1)
    before = hint.token(sku)
    await stock_up(store, sku, 1)
    await _until(lambda: hint.token(sku) != before)  # the receipt's own notification has arrived
    assert not hint.sold_out(sku, "main")
    token = hint.token(sku)
    await store.reserve(0, request("h-1", (sku, 1)))
    hint.mark_sold_out(sku, "main", token)
    assert hint.sold_out(sku, "main")
    assert not hint.sold_out(sku, "east")

    await store.release(0, "h-1", [StockLine(sku=sku, quantity=1)])
    delay = await _until(lambda: not hint.sold_out(sku, "main"))
    assert delay < 1.0


async def test_a_stale_sold_out_answer_cannot_hide_returned_stock(hint, store):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 1)
    await store.reserve(1, request("h-2", (sku, 1)))
    token = hint.token(sku)  # taken before "the database said zero" arrives
    await store.release(1, "h-2", [StockLine(sku=sku, quantity=1)])
    await _until(lambda: hint.token(sku) != token)
    hint.mark_sold_out(sku, "main", token)  # the late answer
    assert not hint.sold_out(sku, "main")


async def test_every_way_stock_returns_clears_the_hint(hint, store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 1)
    await store.reserve(0, request("h-3", (sku, 1)))

    async def comes_back(action) -> None:  # type: ignore[no-untyped-def]
        hint.mark_sold_out(sku, "main", hint.token(sku))
        assert hint.sold_out(sku, "main")
        await action()
        await _until(lambda: not hint.sold_out(sku, "main"))

    await comes_back(lambda: store.receive(sku, "main", 1, idempotency_key="h-rcv"))
    [level] = await store.get(sku)
    await comes_back(
        lambda: store.adjust(sku, "main", 5, expected_version=level.version, idempotency_key="h-adj")
    )

    async def expire() -> None:
        from sqlalchemy import text

        async with databases.shards[0].begin() as conn:
            await conn.execute(text("UPDATE reservations SET expires_at = now() - interval '1 second'"))
        assert await store.expire_all(0) == 1

    await comes_back(expire)


async def test_sold_out_checkouts_start_no_workflow(saga, store, databases, hint):
    screen = SoldOutScreen(saga, hint, store)
    (sku,) = skus_on_shard(store.router, 0, 1)
    before = hint.token(sku)
    await catalog(databases, store, (sku, 2))
    await _until(lambda: hint.token(sku) != before)  # the receipt's own notification has arrived
    first = await asyncio.gather(*(screen.start(order((sku, 1))) for _ in range(4)))
    assert sum(v.held for v in first) == 2
    assert hint.sold_out(sku, "main")
    late = order((sku, 1))
    view = await screen.start(late)
    assert view.fast_path and not view.held and view.reason is RejectReason.OUT_OF_STOCK
    from invsaga.domain.errors import CheckoutNotFound

    with pytest.raises(CheckoutNotFound):
        await saga.status(late.order_id)
    results = [await saga.result(v.order_id) for v in first]
    assert sorted(r.status for r in results).count(CheckoutStatus.CONFIRMED) == 2
    assert await levels(store, sku) == {sku: (0, 0)}


async def test_starting_the_order_that_took_the_last_unit_again_attaches_to_its_checkout(
    saga, store, databases, hint
):
    screen = SoldOutScreen(saga, hint, store)
    (sku,) = skus_on_shard(store.router, 1, 1)
    await catalog(databases, store, (sku, 1))
    winner = order((sku, 1), token="tok_slow_1000")
    assert (await screen.start(winner)).held
    loser = await screen.start(order((sku, 1)))
    assert loser.fast_path and not loser.held
    await _until(lambda: hint.sold_out(sku, "main"))

    again = await screen.start(winner)

    assert again.held and not again.fast_path and again.order_id == winner.order_id
    assert (await saga.result(winner.order_id)).status is CheckoutStatus.CONFIRMED
    assert await levels(store, sku) == {sku: (0, 0)}


async def test_what_the_hint_learned_before_it_listened_is_forgotten_once_it_listens(settings, store):
    """Regression: a "sold out" learned before the LISTEN connections were up survived them, so stock
    that came back in between (its notification sent to nobody) stayed hidden for up to max_age."""
    hint = SoldOutHint(settings.shard_urls, max_age_seconds=30)
    (sku,) = skus_on_shard(store.router, 0, 1)
    hint.mark_sold_out(sku, "main", hint.token(sku))
    assert not hint.sold_out(sku, "main")  # not listening: it says nothing
    await hint.start()
    try:
        await hint.wait_listening()
        assert not hint.sold_out(sku, "main")
    finally:
        await hint.close()


async def test_any_sold_out_is_what_lets_the_fast_path_look_at_a_request(hint, store):
    """The API's fast path reads a checkout's body only while ``any_sold_out()``: True whenever
    ``sold_out`` could be, False once the hint holds nothing."""
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 1)
    await store.reserve(0, request("h-any", (sku, 1)))
    assert not hint.any_sold_out()
    hint.mark_sold_out(sku, "main", hint.token(sku))
    assert hint.any_sold_out() and hint.sold_out(sku, "main")
    await store.release(0, "h-any", [StockLine(sku=sku, quantity=1)])
    await _until(lambda: not hint.any_sold_out())
