"""Slot moves on three real Postgres servers, at the store level: a move under racing writes, a mover
killed and resumed, an abort, and a process with a stale slot map.

The fleet is this module's own (two shards registered from INVSAGA_SHARD_DSNS, a third added by the
registry), so the session's slot map is never touched. After every move the same checks run: the
audit is clean, every unit is conserved across shards, no SKU is served by two shards, and the slot
map names the target.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from invsaga.dev.postgres import PgFleet
from invsaga.domain.errors import MoveRefused, SlotMoving
from invsaga.domain.stock import ReserveRequest, StockLine
from invsaga.settings import Settings, load_settings, to_asyncpg_url
from invsaga.store import order_evidence
from invsaga.store.audit import audit
from invsaga.store.databases import Databases, migrate_all, migrate_shard
from invsaga.store.migrations import definitions_for
from invsaga.store.registry import register_shard
from invsaga.store.rerouting import rerouted
from invsaga.store.routing import slot_of
from invsaga.store.slot_move import MoveOptions, SlotMove, SlotMover
from invsaga.store.slot_ownership import OWNED_STOCK
from invsaga.store.stock import StockStore

T = TypeVar("T")


@dataclass
class Resharding:
    fleet: PgFleet
    settings: Settings
    databases: Databases
    store: StockStore
    new_shard: int


@pytest.fixture(scope="module")
async def resharding(three_servers: PgFleet) -> AsyncIterator[Resharding]:
    dsns = three_servers.shard_dsns
    settings = load_settings(shard_dsns=",".join(dsns[:2]), core_dsn=three_servers.core_dsn, pool_size=20)
    await migrate_all(settings)
    databases = await Databases.open(settings)
    index = await register_shard(databases.core, dsns[2])
    await migrate_shard(to_asyncpg_url(dsns[2]), index)
    await databases.refresh()
    try:
        yield Resharding(three_servers, settings, databases, StockStore(databases), index)
    finally:
        await databases.close()


def _skus_in(slots: set[int], prefix: str, count: int) -> list[str]:
    found, n = [], 0
    while len(found) < count:
        sku = f"{prefix}-{n}"
        if slot_of(sku) in slots:
            found.append(sku)
        n += 1
    return found


def _slots_of(databases: Databases, shard: int, count: int, skip: int = 0) -> list[int]:
    mine = [s for s, owner in enumerate(databases.router.slots) if owner == shard]
    return mine[skip : skip + count]


async def _receive(store: StockStore, skus: list[str], units: int) -> None:
    for sku in skus:
        await store.receive(sku, "main", units, idempotency_key=f"seed-{sku}")


async def _served_twice(databases: Databases) -> list[str]:
    seen: dict[str, int] = {}
    twice = []
    for index in databases.serving():
        async with databases.shards[index].connect() as conn:
            for sku in (await conn.execute(text(f"SELECT DISTINCT sku FROM {OWNED_STOCK} s"))).scalars():
                if sku in seen:
                    twice.append(sku)
                seen[sku] = index
    return twice


async def _units(databases: Databases, skus: list[str]) -> dict[str, int]:
    """Received, on hand and sold over every shard's rows that its owner serves."""
    totals = {"received": 0, "on_hand": 0, "sold": 0}
    for index in databases.serving():
        async with databases.shards[index].connect() as conn:
            row = (
                await conn.execute(
                    text(f"SELECT coalesce(sum(on_hand), 0) FROM {OWNED_STOCK} s WHERE sku = ANY (:skus)"),
                    {"skus": skus},
                )
            ).scalar_one()
            totals["on_hand"] += int(row)
            ledger = (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(delta_on_hand)"
                        " FILTER (WHERE reason IN ('receive', 'adjust')), 0),"
                        " coalesce(-sum(delta_on_hand) FILTER (WHERE reason = 'commit'), 0)"
                        " FROM stock_movements m WHERE sku = ANY (:skus) AND EXISTS (SELECT 1 FROM"
                        f" {OWNED_STOCK} s WHERE s.sku = m.sku AND s.location = m.location)"
                    ),
                    {"skus": skus},
                )
            ).one()
            totals["received"] += int(ledger[0])
            totals["sold"] += int(ledger[1])
    return totals


async def _check_after_move(r: Resharding, move: SlotMove, skus: list[str]) -> None:
    assert move.phase == "done"
    report = await audit(r.databases)
    assert report.clean, report.violations[:5]
    assert await _served_twice(r.databases) == []
    units = await _units(r.databases, skus)
    assert units["received"] == units["on_hand"] + units["sold"], units
    assert all(r.databases.router.shard_of_slot(s) == move.target for s in move.slots)
    for sku in skus:
        if slot_of(sku) in move.slots:
            async with r.databases.shards[move.source].connect() as conn:
                assert not await conn.scalar(
                    text("SELECT count(*) FROM stock_levels WHERE sku = :s"), {"s": sku}
                )


class Traffic:
    """Buyers racing the mover: reserve, then commit or release, plus receipts, on the given SKUs."""

    def __init__(self, store: StockStore, skus: list[str]) -> None:
        self.store, self.skus = store, skus
        self.stop = asyncio.Event()
        self.committed = 0
        self.released = 0
        self.refusals = 0
        self.errors: list[BaseException] = []

    async def buyer(self, name: str) -> None:
        rng = random.Random(name)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                await self._checkout(rng, f"{name}-{n}", rng.choice(self.skus), restock=n % 7 == 0)
            except BaseException as exc:
                self.errors.append(exc)
                return

    async def _checkout(self, rng: random.Random, order: str, sku: str, *, restock: bool) -> None:
        """Reserve, then commit or release, each routed with the map of the moment."""
        line = StockLine(sku=sku, location="main", quantity=1)
        request = ReserveRequest(order_id=order, lines=[line], ttl_seconds=600)
        outcome = await self._routed(lambda: self.store.reserve(self.store.router.shard_of(sku), request))
        await asyncio.sleep(rng.random() * 0.01)
        if outcome.held and rng.random() < 0.6:
            await self._routed(lambda: self.store.commit(self.store.router.shard_of(sku), order))
            self.committed += 1
        else:
            await self._routed(lambda: self.store.release(self.store.router.shard_of(sku), order, [line]))
            self.released += 1
        if restock:
            await self.store.receive(sku, "main", 3, idempotency_key=f"{order}-restock")

    async def _routed(self, attempt: Callable[[], Awaitable[T]]) -> T:
        async def counted() -> T:
            try:
                return await attempt()
            except SlotMoving:
                self.refusals += 1
                raise

        return await rerouted(self.store.databases, counted)


async def test_a_move_under_racing_checkouts_loses_nothing(resharding: Resharding) -> None:
    r = resharding
    slots = _slots_of(r.databases, 0, 40)
    moving = _skus_in(set(slots), "race", 60)
    staying = _skus_in(set(_slots_of(r.databases, 0, 20, skip=200)), "stay", 20)
    await _receive(r.store, moving + staying, 50)
    traffic = Traffic(r.store, moving + staying)
    buyers = [asyncio.create_task(traffic.buyer(f"b{i}")) for i in range(12)]
    await asyncio.sleep(0.3)
    mover = SlotMover(r.databases, MoveOptions(batch_rows=25, round_pause=0.02))
    (move,) = await mover.plan(slots, r.new_shard)
    done = await mover.run(move.move_id)
    await asyncio.sleep(0.3)
    traffic.stop.set()
    await asyncio.gather(*buyers)
    assert traffic.errors == []
    assert traffic.committed > 20 and traffic.released > 10
    await _check_after_move(r, done, moving + staying)
    assert done.fence_ms is not None and done.skus_copied == len(moving)


async def test_a_mover_killed_mid_copy_and_mid_catch_up_resumes(resharding: Resharding) -> None:
    r = resharding
    slots = _slots_of(r.databases, 1, 40)
    moving = _skus_in(set(slots), "kill", 80)
    await _receive(r.store, moving, 20)
    traffic = Traffic(r.store, moving)
    buyers = [asyncio.create_task(traffic.buyer(f"k{i}")) for i in range(8)]

    class Killed(Exception):
        pass

    def kill_at(phase: str, copied_at_least: int = 0):  # type: ignore[no-untyped-def]
        def progress(move: SlotMove) -> None:
            if move.phase == phase and move.skus_copied >= copied_at_least:
                raise Killed(phase)

        return progress

    (move,) = await SlotMover(r.databases).plan(slots, r.new_shard)
    with pytest.raises(Killed):
        await SlotMover(r.databases, MoveOptions(batch_rows=20), kill_at("copying", 20)).run(move.move_id)
    assert (await SlotMover(r.databases).get(move.move_id)).phase == "copying"
    with pytest.raises(Killed):
        await SlotMover(r.databases, MoveOptions(batch_rows=20), kill_at("catching_up")).run(move.move_id)
    assert (await SlotMover(r.databases).get(move.move_id)).phase == "catching_up"
    report = await audit(r.databases)  # mid-move: the target's copy is not counted
    assert report.clean, report.violations[:5]
    done = await SlotMover(r.databases, MoveOptions(batch_rows=20)).run(move.move_id)
    traffic.stop.set()
    await asyncio.gather(*buyers)
    assert traffic.errors == []
    await _check_after_move(r, done, moving)


async def test_an_aborted_move_leaves_the_source_serving_and_the_target_empty(resharding: Resharding) -> None:
    r = resharding
    slots = _slots_of(r.databases, 0, 10, skip=100)
    skus = _skus_in(set(slots), "abort", 20)
    await _receive(r.store, skus, 5)

    def stop_when_catching_up(move: SlotMove) -> None:
        if move.phase == "catching_up":
            raise asyncio.CancelledError

    mover = SlotMover(r.databases)
    (move,) = await mover.plan(slots, r.new_shard)
    with pytest.raises(asyncio.CancelledError):
        await SlotMover(r.databases, progress=stop_when_catching_up).run(move.move_id)
    async with r.databases.shards[r.new_shard].connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM stock_levels WHERE sku = ANY (:s)"), {"s": skus})
    aborted = await mover.abort(move.move_id)
    assert aborted.phase == "aborted"
    async with r.databases.shards[r.new_shard].connect() as conn:
        assert not await conn.scalar(
            text("SELECT count(*) FROM stock_levels WHERE sku = ANY (:s)"), {"s": skus}
        )
    assert all(r.databases.router.shard_of_slot(s) == 0 for s in slots)
    level = await r.store.receive(skus[0], "main", 1, idempotency_key="after-abort")
    assert level.on_hand == 6
    with pytest.raises(MoveRefused, match="aborted"):
        await mover.run(move.move_id)
    assert (await audit(r.databases)).clean


async def test_a_process_with_a_stale_map_is_refused_and_reroutes(resharding: Resharding) -> None:
    r = resharding
    stale = await Databases.open(r.settings)
    try:
        slots = _slots_of(r.databases, 0, 5, skip=300)
        (sku,) = _skus_in(set(slots), "stale", 1)
        await r.store.receive(sku, "main", 10, idempotency_key="stale-seed")
        await stale.refresh()
        old_shard = stale.router.shard_of(sku)
        mover = SlotMover(r.databases)
        (move,) = await mover.plan(slots, r.new_shard)
        await mover.run(move.move_id)
        assert stale.router.shard_of(sku) == old_shard  # it did not hear of the move
        stale_store = StockStore(stale)
        line = StockLine(sku=sku, location="main", quantity=2)
        with pytest.raises(SlotMoving, match=f"moved to shard {r.new_shard}"):
            await stale_store.reserve(
                old_shard, ReserveRequest(order_id="stale-1", lines=[line], ttl_seconds=60)
            )
        # The store's own routed writes reload the map and go to the new shard.
        level = await stale_store.receive(sku, "main", 1, idempotency_key="stale-receipt")
        assert level.on_hand == 11
        assert stale.router.shard_of(sku) == r.new_shard
    finally:
        await stale.close()


async def test_an_order_spanning_a_moving_slot_commits_its_other_lines_mid_move(
    resharding: Resharding,
) -> None:
    """A shard also holds rows that are not its own during a move: the target's copy arriving, and
    what the source keeps of slots that left until the mover deletes it. A commit or release of the
    order's other lines there counted and wrote those rows too, so the shard refused it (seen: a
    confirm stuck for as long as the copy took) or judged the order by a stale copy."""
    r = resharding
    slots = _slots_of(r.databases, 0, 4, skip=500)
    (moving,) = _skus_in(set(slots), "span-moving", 1)
    (there,) = _skus_in(set(_slots_of(r.databases, 1, 4, skip=500)), "span-there", 1)
    (moving_2,) = _skus_in(set(slots), "span-moving2", 1)
    (moving_3,) = _skus_in(set(slots), "span-moving3", 1)
    (staying,) = _skus_in(set(_slots_of(r.databases, 0, 4, skip=600)), "span-staying", 1)
    await _receive(r.store, [moving, there, moving_2, moving_3, staying], 10)

    def line(sku: str) -> StockLine:
        return StockLine(sku=sku, location="main", quantity=2)

    async def hold(order: str, shard: int, *skus: str) -> None:
        request = ReserveRequest(order_id=order, lines=[line(s) for s in skus], ttl_seconds=600)
        assert (await r.store.reserve(shard, request)).held

    await hold("span-1", 0, moving)
    await hold("span-1", 1, there)
    await hold("span-2", 0, moving_2, staying)
    await hold("span-3", 0, moving_3)

    class Killed(Exception):
        pass

    def kill_at(phase: str):  # type: ignore[no-untyped-def]
        def progress(move: SlotMove) -> None:
            if move.phase == phase:
                raise Killed(phase)

        return progress

    (move,) = await SlotMover(r.databases).plan(slots, 1)
    with pytest.raises(Killed):  # shard 1 now holds a copy of span-1's hold on `moving`
        await SlotMover(r.databases, progress=kill_at("catching_up")).run(move.move_id)
    # A place step that reserves its line on shard 1 now is no replay of the copy of its other hold.
    grown = await r.store.reserve(1, ReserveRequest(order_id="span-3", lines=[line(there)], ttl_seconds=600))
    assert grown.held and not grown.replayed and [a.sku for a in grown.allocations] == [there]
    assert (await r.store.release(1, "span-3", [line(there)])).moved_lines == 1
    assert (await r.store.release(0, "span-3", [line(moving_3)])).moved_lines == 1
    committed = await r.store.commit(1, "span-1", [line(there)])
    assert committed.moved_lines == 1
    assert (await r.store.commit(0, "span-1", [line(moving)])).moved_lines == 1
    with pytest.raises(Killed):  # shard 0 still keeps span-2's hold on `moving_2`, as moved out
        await SlotMover(r.databases, progress=kill_at("flipped")).run(move.move_id)
    released = await r.store.release(0, "span-2", [line(staying)])
    assert released.moved_lines == 1
    assert (await r.store.release(1, "span-2", [line(moving_2)])).moved_lines == 1
    done = await SlotMover(r.databases).run(move.move_id)
    skus = [moving, there, moving_2, moving_3, staying]
    await _check_after_move(r, done, skus)
    levels = await r.store.get_many(skus)
    assert [(levels[s][0].on_hand, levels[s][0].reserved) for s in skus] == [(8, 0), (8, 0)] + [(10, 0)] * 3


async def test_an_order_read_across_the_shards_while_its_slot_flips_is_counted(
    resharding: Resharding, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards' holds are read one by one. Read on the target before the flip (a copy arriving: not
    its own) and on the source after it (moved out, then deleted), a sold line counted nowhere, and a
    checkout whose confirm ran in a lost task would have read as never sold. The interleaving is forced
    here; the move is real."""
    r = resharding
    slots = _slots_of(r.databases, 1, 3, skip=700)
    (sku,) = _skus_in(set(slots), "flip-read", 1)
    await _receive(r.store, [sku], 5)
    line = StockLine(sku=sku, location="main", quantity=1)
    request = ReserveRequest(order_id="flip-read-1", lines=[line], ttl_seconds=600)
    assert (await r.store.reserve(1, request)).held
    assert (await r.store.commit(1, "flip-read-1", [line])).moved_lines == 1

    def stop_when_catching_up(move: SlotMove) -> None:
        if move.phase == "catching_up":
            raise asyncio.CancelledError

    (move,) = await SlotMover(r.databases).plan(slots, r.new_shard)
    with pytest.raises(asyncio.CancelledError):
        await SlotMover(r.databases, progress=stop_when_catching_up).run(move.move_id)
    real = order_evidence.holds_on
    first_pass = len(r.databases.serving())
    reads: list[int] = []
    flipped = asyncio.Event()

    async def target_first_then_flip(databases: Databases, index: int, ids: Collection[str]) -> list[Any]:
        reads.append(index)
        if len(reads) > first_pass:
            return await real(databases, index, ids)
        if index != move.target:
            await flipped.wait()
            return await real(databases, index, ids)
        found = await real(databases, index, ids)
        await SlotMover(r.databases).run(move.move_id)
        flipped.set()
        return found

    monkeypatch.setattr(order_evidence, "holds_on", target_first_then_flip)
    assert await order_evidence.committed_lines(r.databases, "flip-read-1") == 1
    assert len(reads) > first_pass  # read again: the map changed under the first reads
    monkeypatch.undo()
    await _check_after_move(r, await SlotMover(r.databases).get(move.move_id), [sku])


@asynccontextmanager
async def _slow_queueing(databases: Databases) -> AsyncIterator[None]:
    """The guard with a pause between its refusal check and its queueing, on every shard: a fence that
    commits in between, rare at full speed, then happens in most moves under traffic."""
    sql = next(d.sql for d in definitions_for("shard") if d.name == "guard_moving_slots")
    marker = "    IF TG_TABLE_NAME = 'stock_levels' THEN\n        INSERT INTO slot_move_changes"
    assert sql.count(marker) == 1
    slowed = sql.replace(marker, "    PERFORM pg_sleep(0.02);\n" + marker)

    async def install(script: str) -> None:
        for index in databases.serving():
            async with databases.shards[index].begin() as conn:
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute(script)  # type: ignore[union-attr]

    await install(slowed)
    try:
        yield
    finally:
        await install(sql)


async def test_a_writer_that_passed_the_fence_check_just_before_the_fence_keeps_its_changes(
    resharding: Resharding,
) -> None:
    """Seen failing: the guard's check and its queueing are two statements, two snapshots; when the
    queueing took only 'copying' rows, a fence committed in between dropped that writer's changes from
    the queue (a reserve's ledger row went missing on the target, one move in fifteen at full speed)."""
    r = resharding
    async with _slow_queueing(r.databases):
        for round_ in range(4):
            source = round_ % 2
            slots = _slots_of(r.databases, source, 6, skip=400 + 6 * round_)
            skus = _skus_in(set(slots), f"there{round_}", 8)
            await _receive(r.store, skus, 40)
            traffic = Traffic(r.store, skus)
            buyers = [asyncio.create_task(traffic.buyer(f"t{round_}-{i}")) for i in range(12)]
            await asyncio.sleep(0.1)
            mover = SlotMover(r.databases, MoveOptions(batch_rows=25, round_pause=0.01))
            (there,) = await mover.plan(slots, r.new_shard)
            await _check_moved(r, await mover.run(there.move_id))
            (back,) = await mover.plan(slots, source)  # back to a shard the slots left
            await _check_moved(r, await mover.run(back.move_id))
            traffic.stop.set()
            await asyncio.gather(*buyers)
            assert traffic.errors == []
            await _check_after_move(r, await mover.get(back.move_id), skus)


async def _check_moved(r: Resharding, move: SlotMove) -> None:
    assert move.phase == "done"
    report = await audit(r.databases)
    assert report.clean, report.violations[:5]


async def test_a_watching_process_follows_a_move_without_being_refused(resharding: Resharding) -> None:
    """The LISTEN path: the process' map and shard list change when the core database notifies."""
    r = resharding
    watching = await Databases.open(r.settings, watch=True)
    try:
        assert len(watching.shards) == 3  # the registered shard, from the registry at start
        slots = _slots_of(r.databases, 1, 3, skip=300)
        before = watching.router.epoch
        mover = SlotMover(r.databases)
        (move,) = await mover.plan(slots, r.new_shard)
        await mover.run(move.move_id)
        for _ in range(200):
            if watching.router.epoch > before:
                break
            await asyncio.sleep(0.01)
        assert watching.router.epoch > before  # well inside the 5 s poll: it was the notification
        assert all(watching.router.shard_of_slot(s) == r.new_shard for s in slots)
    finally:
        await watching.close()
