"""Single-caller behaviour of every stock operation against real shards."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from invsaga.domain.errors import (
    BelowReserved,
    IdempotencyKeyConflict,
    InvalidInput,
    ReservationClosed,
    SlotMoving,
    UnknownSku,
    VersionConflict,
)
from invsaga.domain.stock import HoldState, StockLine
from tests.helpers import assert_clean_audit, request, skus_on_shard, stock_up

pytestmark = pytest.mark.usefixtures("clean_shards")


async def test_reserve_commit_moves_stock_and_writes_ledger(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    outcome = await store.reserve(0, request("o-1", (sku, 3)))
    assert outcome.state is HoldState.HELD and not outcome.replayed
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved, level.available) == (10, 3, 7)

    committed = await store.commit(0, "o-1")
    assert committed.moved_lines == 1
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (7, 0)
    async with databases.shards[0].connect() as conn:
        reasons = (await conn.execute(text("SELECT reason FROM stock_movements ORDER BY id"))).scalars().all()
    assert reasons == ["receive", "reserve", "commit"]
    await assert_clean_audit(databases)


async def test_multi_line_reserve_is_all_or_nothing_and_names_the_short_line(store, databases):
    a, b, c = skus_on_shard(store.router, 1, 3)
    await stock_up(store, a, 5)
    await stock_up(store, b, 1)
    await stock_up(store, c, 5)
    outcome = await store.reserve(1, request("o-short", (a, 2), (b, 3), (c, 1)))
    assert outcome.state is None
    assert [(s.sku, s.requested, s.available, s.missing) for s in outcome.shortages] == [(b, 3, 1, 2)]
    levels = await store.get_many([a, b, c])
    assert all(lv.reserved == 0 for lvs in levels.values() for lv in lvs)
    await assert_clean_audit(databases)


async def test_reserve_replay_returns_first_result(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    first = await store.reserve(0, request("o-r", (sku, 2)))
    second = await store.reserve(0, request("o-r", (sku, 2)))
    assert (first.state, first.replayed) == (HoldState.HELD, False)
    assert (second.state, second.replayed) == (HoldState.HELD, True)
    [level] = await store.get(sku)
    assert level.reserved == 2


async def test_a_replay_naming_a_line_the_first_call_did_not_holds_that_line_too(store, databases):
    """A slot move between two attempts of the place step can route a line to a shard where the order
    already holds others. Answering with the first split alone left that line unheld, and the order
    could be confirmed (and charged) for a line it never held: invariant 5."""
    a, b = skus_on_shard(store.router, 0, 2)
    await stock_up(store, a, 5)
    await stock_up(store, b, 5)
    first = await store.reserve(0, request("o-grow", (a, 2)))
    grown = await store.reserve(0, request("o-grow", (a, 2), (b, 3)))
    again = await store.reserve(0, request("o-grow", (a, 2), (b, 3)))
    assert (first.state, grown.state, again.state) == (HoldState.HELD,) * 3
    assert (grown.replayed, again.replayed) == (False, True)
    assert [(x.sku, x.quantity) for x in grown.allocations] == [(a, 2), (b, 3)]
    assert again.allocations == grown.allocations
    levels = await store.get_many([a, b])
    assert (levels[a][0].reserved, levels[b][0].reserved) == (2, 3)
    assert (
        await store.commit(0, "o-grow", [StockLine(sku=a, quantity=2), StockLine(sku=b, quantity=3)])
    ).moved_lines == 2
    levels = await store.get_many([a, b])
    assert (levels[a][0].on_hand, levels[b][0].on_hand) == (3, 2)
    await assert_clean_audit(databases)


async def test_a_replay_whose_new_line_is_short_is_refused_and_keeps_only_the_first_hold(store, databases):
    a, b = skus_on_shard(store.router, 1, 2)
    await stock_up(store, a, 5)
    await stock_up(store, b, 1)
    await store.reserve(1, request("o-grow-short", (a, 2)))
    grown = await store.reserve(1, request("o-grow-short", (a, 2), (b, 3)))
    assert grown.state is None
    assert [(s.sku, s.requested, s.available) for s in grown.shortages] == [(b, 3, 1)]
    levels = await store.get_many([a, b])
    assert (levels[a][0].reserved, levels[b][0].reserved) == (2, 0)
    lines = [StockLine(sku=a, quantity=2), StockLine(sku=b, quantity=3)]
    assert (await store.release(1, "o-grow-short", lines)).moved_lines == 1
    late = await store.reserve(1, request("o-grow-short", (a, 2), (b, 1)))
    assert late.state is HoldState.RELEASED and late.replayed  # a released order grows no longer
    levels = await store.get_many([a, b])
    assert (levels[a][0].reserved, levels[b][0].reserved) == (0, 0)
    await assert_clean_audit(databases)


async def test_release_is_safe_when_nothing_was_reserved_and_fences_a_late_reserve(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    line = StockLine(sku=sku, quantity=2)
    released = await store.release(0, "o-late", [line])
    assert released.moved_lines == 0
    late = await store.reserve(0, request("o-late", (sku, 2)))
    assert late.state is HoldState.RELEASED and late.replayed
    [level] = await store.get(sku)
    assert level.reserved == 0
    await assert_clean_audit(databases)


async def test_release_then_commit_is_refused(store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 5)
    await store.reserve(1, request("o-rel", (sku, 2)))
    assert (await store.release(1, "o-rel")).moved_lines == 1
    assert (await store.release(1, "o-rel")).moved_lines == 0
    with pytest.raises(ReservationClosed):
        await store.commit(1, "o-rel")
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved) == (5, 0)
    await assert_clean_audit(databases)


async def test_expire_frees_only_holds_past_their_ttl(store, databases):
    a, b = skus_on_shard(store.router, 0, 2)
    await stock_up(store, a, 5)
    await stock_up(store, b, 5)
    await store.reserve(0, request("o-old", (a, 2)))
    await store.reserve(0, request("o-new", (b, 1)))
    async with databases.shards[0].begin() as conn:
        await conn.execute(
            text("UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE order_id = 'o-old'")
        )
    assert await store.expire_all(0) == 1
    levels = await store.get_many([a, b])
    assert levels[a][0].reserved == 0 and levels[b][0].reserved == 1
    with pytest.raises(ReservationClosed):
        await store.commit(0, "o-old")
    await assert_clean_audit(databases)


async def test_adjust_is_compare_and_set(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    created = await store.adjust(sku, "main", 10, expected_version=0, idempotency_key="k1")
    assert (created.on_hand, created.version) == (10, 1)
    updated = await store.adjust(sku, "main", 4, expected_version=1, idempotency_key="k2")
    assert (updated.on_hand, updated.version) == (4, 2)
    with pytest.raises(VersionConflict) as conflict:
        await store.adjust(sku, "main", 99, expected_version=1, idempotency_key="k3")
    assert conflict.value.details["actual"] == 2
    replay = await store.adjust(sku, "main", 4, expected_version=1, idempotency_key="k2")
    assert (replay.on_hand, replay.version) == (4, 2)
    [level] = await store.get(sku)
    assert (level.on_hand, level.version) == (4, 2)
    await assert_clean_audit(databases)


async def test_adjust_never_goes_below_reserved(store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    await stock_up(store, sku, 10)
    await store.reserve(1, request("o-held", (sku, 6)))
    [level] = await store.get(sku)
    with pytest.raises(BelowReserved):
        await store.adjust(sku, "main", 5, expected_version=level.version, idempotency_key="low")
    [after] = await store.get(sku)
    assert after == level
    await assert_clean_audit(databases)


async def test_receive_is_idempotent_by_key(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await store.receive(sku, "main", 7, idempotency_key="po-1")
    again = await store.receive(sku, "main", 7, idempotency_key="po-1")
    assert again.on_hand == 7
    await assert_clean_audit(databases)


async def test_bad_input_changes_nothing(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 5)
    with pytest.raises(InvalidInput):
        await store.receive(sku, "main", -3, idempotency_key="neg")
    with pytest.raises(InvalidInput):
        await store.receive(sku, "main", 0, idempotency_key="zero")
    with pytest.raises(InvalidInput, match="quantity must be from 1"):
        await store.receive(sku, "main", 2**63, idempotency_key="past-bigint")
    with pytest.raises(UnknownSku):
        await store.get("NOPE-does-not-exist")
    with pytest.raises(UnknownSku):
        await store.adjust("NOPE-x", "main", 3, expected_version=4, idempotency_key="u")
    (other,) = skus_on_shard(store.router, 1, 1)
    # A line routed to another shard than the slot map says: refused as routed by a stale map, and
    # retryable (a caller that routes again gets it right); nothing is written.
    with pytest.raises(SlotMoving, match="lives on shard 1"):
        await store.reserve(0, request("o-misrouted", (other, 1)))
    unknown = await store.reserve(0, request("o-unknown", (skus_on_shard(store.router, 0, 1)[0], 1)))
    assert unknown.state is None and len(unknown.unknown_skus) == 1
    [level] = await store.get(sku)
    assert (level.on_hand, level.reserved, level.version) == (5, 0, 1)
    await assert_clean_audit(databases)


async def test_audit_catches_tampering(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    await stock_up(store, sku, 10)
    await store.reserve(0, request("o-t", (sku, 2)))
    async with databases.shards[0].begin() as conn:
        await conn.execute(text("UPDATE stock_levels SET reserved = 3 WHERE sku = :s"), {"s": sku})
    from invsaga.store.audit import audit

    report = await audit(databases)
    assert {v.invariant for v in report.violations} == {2, 3}
    assert all(v.sku == sku for v in report.violations)


async def test_a_receipt_key_is_scoped_to_its_sku_and_location(store, databases):
    a, b = skus_on_shard(store.router, 0, 2)
    await store.receive(a, "main", 7, idempotency_key="po-shared")
    other_sku = await store.receive(b, "main", 4, idempotency_key="po-shared")
    other_location = await store.receive(a, "east", 2, idempotency_key="po-shared")
    assert (other_sku.sku, other_sku.location, other_sku.on_hand) == (b, "main", 4)
    assert (other_location.sku, other_location.location, other_location.on_hand) == (a, "east", 2)
    await assert_clean_audit(databases)


async def test_a_receipt_key_reused_with_another_quantity_is_refused(store, databases):
    (sku,) = skus_on_shard(store.router, 1, 1)
    first = await store.receive(sku, "main", 7, idempotency_key="po-9")
    with pytest.raises(IdempotencyKeyConflict, match="po-9"):
        await store.receive(sku, "main", 8, idempotency_key="po-9")
    assert await store.get(sku) == [first]
    await assert_clean_audit(databases)


async def test_a_receipt_past_bigint_on_hand_is_invalid_and_changes_nothing(store, databases):
    (sku,) = skus_on_shard(store.router, 0, 1)
    first = await store.receive(sku, "main", 2**62, idempotency_key="huge-1")
    with pytest.raises(InvalidInput, match="on_hand"):
        await store.receive(sku, "main", 2**62, idempotency_key="huge-2")
    assert await store.get(sku) == [first]
    await assert_clean_audit(databases)
