"""Move slots from one shard to another while checkouts run: copy, catch up, fence, flip, clean up.

The shape is Vitess MoveTables' and Citus' shard move, done with what every shard already has:

1. **planned → copying.** The target marks the slots ``importing`` (it refuses writes to them); the
   source marks them ``copying``, and from then on its trigger (``guard_moving_slots``) queues every
   changed stock row, hold and ledger row of those slots in ``slot_move_changes``. The mover waits for
   the transactions in progress on the source: any of them may have checked the slots' state before
   the mark, and each must be visible to the copy.
2. **copying.** One snapshot of the source's rows of the slots (stock rows, holds, ledger) is copied
   to the target, in batches. A restart copies again: every write is an upsert.
3. **catching_up.** Rounds re-copy the keys the queue names and delete the entries applied, until a
   round finds few enough to fence.
4. **fenced.** The source refuses writes to the slots (a writer waits and retries, ``rerouted``); the
   mover waits for the writers in progress again and applies the rest of the queue. Only this step
   stops the slots' writes, for as long as that last round takes.
5. **flipped.** The target serves the slots, the slot map names it (a new epoch, notified to every
   process), and the source marks them ``moved_out``: a stale process is refused there and reloads.
6. **done.** The source's rows of the slots are deleted, a batch of SKUs per transaction.

Every phase is recorded in the core database (``slot_moves``) before the next starts and every step
is idempotent, so ``run`` resumes a move after a crash anywhere; ``abort`` undoes one not yet flipped.
A session advisory lock on the core database keeps two movers off one move.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import BigInteger, Integer, Text

from invsaga.domain.errors import ConfigurationError, InvalidInput, MoveRefused
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.registry import bump_epoch
from invsaga.store.routing import SLOT_COUNT
from invsaga.store.slot_backfill import backfill_slots

log = logging.getLogger("invsaga.slot_move")

PHASES = ("planned", "copying", "catching_up", "fenced", "flipped", "done")
_MOVER_LOCK = 0x51_07_30  # with the move id: pg_try_advisory_lock(key, move_id) on the core database


@dataclass(frozen=True)
class SlotMove:
    move_id: int
    slots: list[int]
    source: int
    target: int
    phase: str
    skus_copied: int = 0
    fence_ms: float | None = None

    @property
    def open(self) -> bool:
        return self.phase not in ("done", "aborted")


@dataclass(frozen=True)
class MoveOptions:
    #: Rows per write transaction on the target, and SKUs per delete transaction on the source.
    batch_rows: int = 2000
    #: Queued changes applied per catch-up round.
    round_rows: int = 5000
    #: Fence once a catch-up round finds at most this many queued changes.
    fence_below: int = 100
    #: Catch-up rounds before fencing anyway (the last round then runs under the fence).
    max_rounds: int = 30
    #: Catch-up rounds at least, however few changes come: a busy slot's backlog settles first.
    min_rounds: int = 1
    #: Seconds between catch-up rounds: the changes of a busy slot then arrive in fewer, bigger rounds.
    round_pause: float = 0.05
    #: Longest wait for a source transaction that was open when the slots' state changed.
    writer_wait: float = 30.0


#: Called after every phase change and copied batch, with the move as recorded (a test kills there).
Progress = Callable[[SlotMove], Awaitable[None] | None]


# --- core database ---------------------------------------------------------------------------------

_MOVE = text(
    "SELECT move_id, slots, source, target, phase, skus_copied, fence_ms FROM slot_moves WHERE move_id = :id"
)
_MOVES = text(
    "SELECT move_id, slots, source, target, phase, skus_copied, fence_ms FROM slot_moves"
    " WHERE (:open_only = false OR phase NOT IN ('done', 'aborted')) ORDER BY move_id"
)
_OPEN_SLOTS = text("SELECT unnest(slots) FROM slot_moves WHERE phase NOT IN ('done', 'aborted')")
_PLAN = text(
    "INSERT INTO slot_moves (slots, source, target) VALUES (:slots, :source, :target) RETURNING move_id"
).bindparams(bindparam("slots", type_=ARRAY(Integer)))
_SET_PHASE = text("UPDATE slot_moves SET phase = :phase, updated_at = now() WHERE move_id = :id")
_COPIED = text("UPDATE slot_moves SET skus_copied = :n, updated_at = now() WHERE move_id = :id")
_FLIP_MAP = text("UPDATE slot_map SET shard_index = :target WHERE slot = ANY (:slots)").bindparams(
    bindparam("slots", type_=ARRAY(Integer))
)
_FLIPPED = text("UPDATE slot_moves SET phase = 'flipped', updated_at = now() WHERE move_id = :id")
_FENCE_MS = text("UPDATE slot_moves SET fence_ms = :ms WHERE move_id = :id")
_EPOCH = text("SELECT epoch FROM routing_epoch")

# --- shards ----------------------------------------------------------------------------------------

_SLOTS = bindparam("slots", type_=ARRAY(Integer))
_MARK = text(
    "INSERT INTO slot_fences (slot, state, move_id) SELECT unnest(:slots), :state, :id"
    " ON CONFLICT (slot) DO UPDATE SET state = excluded.state, move_id = excluded.move_id,"
    " moved_to = NULL, epoch = 0"
).bindparams(_SLOTS)
_FENCE = text("UPDATE slot_fences SET state = 'fenced' WHERE move_id = :id AND state = 'copying'")
_MOVED_OUT = text(
    "UPDATE slot_fences SET state = 'moved_out', moved_to = :target, epoch = :epoch WHERE move_id = :id"
)
_SERVE = text("DELETE FROM slot_fences WHERE move_id = :id AND state = 'importing'")
_UNMARK = text("DELETE FROM slot_fences WHERE move_id = :id AND state IN ('copying', 'fenced')")
_FENCE_STATES = text("SELECT slot, state, move_id FROM slot_fences WHERE slot = ANY (:slots)").bindparams(
    _SLOTS
)

# Transactions in progress with an xid: any may have read the slots' state before it changed.
_WRITERS = text(
    "SELECT coalesce(array_agg(backend_xid::text), '{}') FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
)
_STILL_RUNNING = text(
    "SELECT count(*) FROM pg_stat_activity WHERE backend_xid::text = ANY (:xids) AND pid <> pg_backend_pid()"
).bindparams(bindparam("xids", type_=ARRAY(Text)))

_STOCK_COLUMNS = "sku, location, on_hand, reserved, version, updated_at, slot"
_HOLD_COLUMNS = "order_id, sku, location, quantity, state, expires_at, created_at, updated_at, pinned_at"
_LEDGER_COLUMNS = (
    "id, sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key, created_at"
)
_READ_STOCK = text(f"SELECT {_STOCK_COLUMNS} FROM stock_levels WHERE slot = ANY (:slots)").bindparams(_SLOTS)
_READ_HOLDS = text(
    f"SELECT {', '.join('r.' + c.strip() for c in _HOLD_COLUMNS.split(','))} FROM reservations r"
    " JOIN stock_levels s ON s.sku = r.sku AND s.location = r.location WHERE s.slot = ANY (:slots)"
).bindparams(_SLOTS)
_READ_LEDGER = text(
    f"SELECT {', '.join('m.' + c.strip() for c in _LEDGER_COLUMNS.split(','))} FROM stock_movements m"
    " JOIN stock_levels s ON s.sku = m.sku AND s.location = m.location WHERE s.slot = ANY (:slots)"
    " ORDER BY m.id"
).bindparams(_SLOTS)

_QUEUED = text(
    "SELECT id, kind, sku, location, order_id, ledger_id FROM slot_move_changes"
    " WHERE move_id = :id ORDER BY id LIMIT :limit"
)
_DEQUEUE = text("DELETE FROM slot_move_changes WHERE id = ANY (:ids)").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger))
)
_FORGET_QUEUE = text("DELETE FROM slot_move_changes WHERE move_id = :id")
_KEYS = (bindparam("skus", type_=ARRAY(Text)), bindparam("locations", type_=ARRAY(Text)))
_STOCK_OF = text(
    f"SELECT {_STOCK_COLUMNS} FROM stock_levels"
    " WHERE (sku, location) IN (SELECT * FROM unnest(:skus, :locations))"
).bindparams(*_KEYS)
_HOLDS_OF = text(
    f"SELECT {_HOLD_COLUMNS} FROM reservations"
    " WHERE (order_id, sku, location) IN (SELECT * FROM unnest(:orders, :skus, :locations))"
).bindparams(bindparam("orders", type_=ARRAY(Text)), *_KEYS)
_LEDGER_OF = text(
    f"SELECT {_LEDGER_COLUMNS} FROM stock_movements WHERE id = ANY (:ids) ORDER BY id"
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))

_AS_MOVER = text("SET LOCAL invsaga.slot_mover = 'on'")
_UPSERT_STOCK = text(
    f"INSERT INTO stock_levels ({_STOCK_COLUMNS}) SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    " AS r(sku text, location text, on_hand bigint, reserved bigint, version bigint, updated_at timestamptz,"
    " slot integer)"
    " ON CONFLICT (sku, location) DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved,"
    " version = excluded.version, updated_at = excluded.updated_at, slot = excluded.slot"
)
_UPSERT_HOLDS = text(
    f"INSERT INTO reservations ({_HOLD_COLUMNS}) SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
    " AS r(order_id text, sku text, location text, quantity integer, state text, expires_at timestamptz,"
    " created_at timestamptz, updated_at timestamptz, pinned_at timestamptz)"
    " ON CONFLICT (order_id, sku, location) DO UPDATE SET quantity = excluded.quantity,"
    " state = excluded.state, expires_at = excluded.expires_at, updated_at = excluded.updated_at,"
    " pinned_at = excluded.pinned_at"
)
# New ids, in the source's id order: per stock row the ledger keeps its order, and its key.
_INSERT_LEDGER = text(
    "WITH incoming AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id bigint, sku text,"
    " location text, delta_on_hand bigint, delta_reserved bigint, reason text, reference text,"
    " idempotency_key text, created_at timestamptz)),"
    " inserted AS (INSERT INTO stock_movements (sku, location, delta_on_hand, delta_reserved, reason,"
    " reference, idempotency_key, created_at)"
    " SELECT sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key, created_at"
    " FROM incoming ORDER BY id ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key)"
    # A key already here must be this very row (a copy made before a restart); another row under the
    # same key would be dropped, so it stops the move instead.
    " SELECT i.idempotency_key FROM incoming i JOIN stock_movements m USING (idempotency_key)"
    " WHERE i.idempotency_key NOT IN (SELECT idempotency_key FROM inserted)"
    "   AND (m.sku, m.location, m.delta_on_hand, m.delta_reserved, m.reason)"
    "   IS DISTINCT FROM (i.sku, i.location, i.delta_on_hand, i.delta_reserved, i.reason)"
)

# Deleting the slots' rows from a shard that does not serve them: ledger and holds first, the stock rows
# last, so every row left still has its stock row, which is what marks it as not served here
# (invsaga.store.slot_ownership) for the audit and the reconciler.
_DELETE_ROWS = [
    text(
        f"DELETE FROM {table} t USING stock_levels s"
        " WHERE s.sku = t.sku AND s.location = t.location AND s.slot = ANY (:slots)"
    ).bindparams(_SLOTS)
    for table in ("stock_movements", "reservations")
] + [text("DELETE FROM stock_levels WHERE slot = ANY (:slots)").bindparams(_SLOTS)]


class SlotMover:
    """Plans, runs, resumes and aborts slot moves over one process' ``Databases``."""

    def __init__(
        self, databases: Databases, options: MoveOptions | None = None, progress: Progress | None = None
    ) -> None:
        self.databases = databases
        self.options = options or MoveOptions()
        self.progress = progress

    # --- planning ------------------------------------------------------------------------------

    async def plan(self, slots: Sequence[int], target: int) -> list[SlotMove]:
        """Record one move per source shard of ``slots``; moves nothing yet. Slots already on
        ``target`` are skipped."""
        wanted = sorted(set(slots))
        if not wanted:
            raise InvalidInput("no slots to move")
        if wanted[0] < 0 or wanted[-1] >= SLOT_COUNT:
            raise InvalidInput(f"slots are numbered 0..{SLOT_COUNT - 1}")
        router = await self.databases.refresh()
        entry = next((e for e in self.databases.registry if e.index == target), None)
        if entry is None:
            raise InvalidInput(f"there is no shard {target}; `invsaga shards add DSN` registers one")
        if not entry.takes_slots:
            raise MoveRefused(f"shard {target} is {entry.state}: it takes no slots")
        by_source: dict[int, list[int]] = {}
        for slot in wanted:
            source = router.shard_of_slot(slot)
            if source != target:
                by_source.setdefault(source, []).append(slot)
        async with unavailable_as("core database"), self.databases.core.begin() as conn:
            await conn.execute(text("LOCK TABLE slot_moves IN SHARE ROW EXCLUSIVE MODE"))
            busy = set((await conn.execute(_OPEN_SLOTS)).scalars()) & set(wanted)
            if busy:
                raise MoveRefused(
                    f"slot(s) {slot_ranges(sorted(busy))} are in a move not finished yet; "
                    "`invsaga slots moves` lists it (resume or abort it first)"
                )
            ids = [
                int(
                    (
                        await conn.execute(_PLAN, {"slots": group, "source": source, "target": target})
                    ).scalar_one()
                )
                for source, group in sorted(by_source.items())
            ]
        return [await self.get(move_id) for move_id in ids]

    async def get(self, move_id: int) -> SlotMove:
        async with unavailable_as("core database"), self.databases.core.connect() as conn:
            row = (await conn.execute(_MOVE, {"id": move_id})).first()
        if row is None:
            raise InvalidInput(f"there is no slot move {move_id}")
        return _move(row)

    async def moves(self, *, open_only: bool = False) -> list[SlotMove]:
        async with unavailable_as("core database"), self.databases.core.connect() as conn:
            return [_move(r) for r in (await conn.execute(_MOVES, {"open_only": open_only})).all()]

    # --- running ---------------------------------------------------------------------------------

    async def run(self, move_id: int) -> SlotMove:
        """Take the move from its recorded phase to done."""
        async with self._exclusive(move_id):
            move = await self.get(move_id)
            if move.phase == "aborted":
                raise MoveRefused(f"move {move_id} was aborted; plan a new one")
            while move.open:
                move = await self._step(move)
                await self._report(move)
            return move

    async def _step(self, move: SlotMove) -> SlotMove:
        if move.phase == "planned":
            await self._start_copying(move)
            return await self._set_phase(move, "copying")
        if move.phase == "copying":
            copied = await self._copy(move)
            return await self._set_phase(move, "catching_up", skus_copied=copied)
        if move.phase == "catching_up":
            await self._catch_up(move)
            fence_started = time.perf_counter()
            await self._fence(move)
            moved = await self._set_phase(move, "fenced")
            return await self._flip(moved, fence_started)
        if move.phase == "fenced":  # resumed after a crash under the fence: the source still fences
            await self._fence(move)
            return await self._flip(move, time.perf_counter())
        if move.phase == "flipped":
            await self._flip(move, None)  # idempotent: finishes a flip interrupted half-way
            await self._delete_rows(move.source, move)
            async with self._on(move.source) as source:
                await source.execute(_FORGET_QUEUE, {"id": move.move_id})
            return await self._set_phase(move, "done")
        raise ConfigurationError(f"move {move.move_id} is in an unknown phase {move.phase!r}")

    async def _start_copying(self, move: SlotMove) -> None:
        await self._check_open(move)
        async with self._on(move.target) as target:
            await target.execute(_MARK, {"slots": move.slots, "state": "importing", "id": move.move_id})
        async with self._on(move.source) as source:
            await source.execute(_MARK, {"slots": move.slots, "state": "copying", "id": move.move_id})
        await self._wait_for_writers(move.source)
        # Rows an older process wrote without their slot would be missed by the copy.
        async with unavailable_as(shard_label(move.source)):
            await backfill_slots(self.databases.shards[move.source])

    async def _copy(self, move: SlotMove) -> int:
        """Copy the source's rows of the slots, as of one snapshot taken after the marks."""
        copied = 0
        engine = self.databases.shards[move.source]
        async with unavailable_as(shard_label(move.source)), engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                for statement, write in (
                    (_READ_STOCK, _UPSERT_STOCK),
                    (_READ_HOLDS, _UPSERT_HOLDS),
                    (_READ_LEDGER, _INSERT_LEDGER),
                ):
                    rows = await conn.stream(statement, {"slots": move.slots})
                    async for batch in rows.mappings().partitions(self.options.batch_rows):
                        await self._write(move, write, [dict(r) for r in batch])
                        if write is _UPSERT_STOCK:
                            copied += len({r["sku"] for r in batch})
                            await self._record_copied(move, copied)
        return copied

    async def _catch_up(self, move: SlotMove) -> None:
        for round_ in range(1, self.options.max_rounds + 1):
            applied = await self._apply_queue(move, limit=self.options.round_rows)
            if applied <= self.options.fence_below and round_ >= self.options.min_rounds:
                return
            await asyncio.sleep(self.options.round_pause)

    async def _fence(self, move: SlotMove) -> None:
        """Fence the slots on the source, wait out its writers in progress, and apply the rest of
        the queue: the target then holds exactly what the source does."""
        async with self._on(move.source) as source:
            await source.execute(_FENCE, {"id": move.move_id})
        await self._wait_for_writers(move.source)
        while await self._apply_queue(move, limit=self.options.round_rows):
            pass

    async def _flip(self, move: SlotMove, fence_started: float | None) -> SlotMove:
        """Let the target serve the slots, point the slot map at it, and turn the source's fence into
        a redirect. Each step is idempotent, so a resumed mover redoes whatever a crash cut short."""
        async with self._on(move.target) as target:
            await target.execute(_SERVE, {"id": move.move_id})
        async with unavailable_as("core database"), self.databases.core.begin() as core:
            phase = (await core.execute(_MOVE, {"id": move.move_id})).one().phase
            if phase != "flipped":
                await core.execute(_FLIP_MAP, {"target": move.target, "slots": move.slots})
                await bump_epoch(core)
                await core.execute(_FLIPPED, {"id": move.move_id})
            epoch = int(await core.scalar(_EPOCH) or 0)
        async with self._on(move.source) as source:
            await source.execute(_MOVED_OUT, {"id": move.move_id, "target": move.target, "epoch": epoch})
        if fence_started is not None and phase != "flipped":
            fence_ms = (time.perf_counter() - fence_started) * 1000
            async with unavailable_as("core database"), self.databases.core.begin() as core:
                await core.execute(_FENCE_MS, {"ms": fence_ms, "id": move.move_id})
        await self.databases.refresh()
        return await self.get(move.move_id)

    async def _delete_rows(self, shard: int, move: SlotMove) -> None:
        """Delete the slots' rows from ``shard``, which does not serve them (any more, or yet)."""
        for statement in _DELETE_ROWS:
            async with self._on(shard) as conn:
                await conn.execute(statement, {"slots": move.slots})

    # --- aborting --------------------------------------------------------------------------------

    async def abort(self, move_id: int) -> SlotMove:
        """Undo a move that has not flipped: the source serves the slots as before (a fence is lifted)
        and the target's copy is deleted."""
        async with self._exclusive(move_id):
            move = await self.get(move_id)
            if move.phase in ("flipped", "done"):
                raise MoveRefused(
                    f"move {move_id} has flipped: shard {move.target} serves its slots now; "
                    f"move them back with `invsaga slots move ... --to {move.source}`"
                )
            if move.phase == "aborted":
                return move
            async with self._on(move.source) as source:
                await source.execute(_UNMARK, {"id": move.move_id})
                await source.execute(_FORGET_QUEUE, {"id": move.move_id})
            await self._delete_rows(move.target, move)
            async with unavailable_as("core database"), self.databases.core.begin() as core:
                epoch = int(await core.scalar(_EPOCH) or 0)
            async with self._on(move.target) as target:
                await target.execute(_MOVED_OUT, {"id": move.move_id, "target": move.source, "epoch": epoch})
            return await self._set_phase(move, "aborted")

    # --- the pieces ------------------------------------------------------------------------------

    async def _apply_queue(self, move: SlotMove, *, limit: int) -> int:
        """Copy again the current source rows of the queued keys, then drop those queue entries;
        returns how many entries were applied. A key changed again meanwhile is queued again."""
        async with self._on(move.source) as conn:
            queued = (await conn.execute(_QUEUED, {"id": move.move_id, "limit": limit})).all()
            if not queued:
                return 0
            stock_keys = sorted({(q.sku, q.location) for q in queued if q.kind == "stock"})
            hold_keys = sorted({(q.order_id, q.sku, q.location) for q in queued if q.kind == "hold"})
            ledger_ids = sorted({q.ledger_id for q in queued if q.kind == "ledger"})
            stock = await _rows(
                conn, _STOCK_OF, skus=[k[0] for k in stock_keys], locations=[k[1] for k in stock_keys]
            )
            holds = await _rows(
                conn,
                _HOLDS_OF,
                orders=[k[0] for k in hold_keys],
                skus=[k[1] for k in hold_keys],
                locations=[k[2] for k in hold_keys],
            )
            ledger = await _rows(conn, _LEDGER_OF, ids=ledger_ids)
        async with self._on(move.target, as_mover=True) as target:
            if stock:
                await target.execute(_UPSERT_STOCK, {"rows": _json(stock)})
            if holds:
                await target.execute(_UPSERT_HOLDS, {"rows": _json(holds)})
            if ledger:
                await self._insert_ledger(target, ledger)
        async with self._on(move.source) as source:
            await source.execute(_DEQUEUE, {"ids": [q.id for q in queued]})
        return len(queued)

    async def _write(self, move: SlotMove, statement: Any, rows: list[dict[str, Any]]) -> None:
        async with self._on(move.target, as_mover=True) as target:
            if statement is _INSERT_LEDGER:
                await self._insert_ledger(target, rows)
            else:
                await target.execute(statement, {"rows": _json(rows)})

    async def _insert_ledger(self, target: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        clashes = list((await target.execute(_INSERT_LEDGER, {"rows": _json(rows)})).scalars())
        if clashes:
            raise MoveRefused(
                f"the target already has other ledger rows under {len(clashes)} of the moving rows' keys "
                f"(first: {clashes[0]!r}); the move stopped before changing routing. Abort it and "
                "resolve the key clash (adjustment keys are not scoped to a SKU)"
            )

    async def _wait_for_writers(self, shard: int) -> None:
        """Wait until every transaction with an xid that was in progress on ``shard`` has ended."""
        engine = self.databases.shards[shard]
        deadline = time.monotonic() + self.options.writer_wait
        async with unavailable_as(shard_label(shard)), engine.connect() as conn:
            xids = list((await conn.execute(_WRITERS)).scalar_one())
            await conn.commit()
            while xids and await conn.scalar(_STILL_RUNNING, {"xids": xids}):
                await conn.commit()  # a fresh view of pg_stat_activity
                if time.monotonic() > deadline:
                    raise MoveRefused(
                        f"a transaction on {shard_label(shard)} has stayed open for over "
                        f"{self.options.writer_wait:.0f} s; the move waits for it. Run the move again "
                        "to resume once it ends"
                    )
                await asyncio.sleep(0.005)

    async def _check_open(self, move: SlotMove) -> None:
        """The slots must not be fenced by another move, on either shard."""
        for shard in (move.source, move.target):
            async with unavailable_as(shard_label(shard)), self.databases.shards[shard].connect() as conn:
                rows = (await conn.execute(_FENCE_STATES, {"slots": move.slots})).all()
            busy = [r.slot for r in rows if r.move_id != move.move_id and r.state != "moved_out"]
            if busy:
                raise MoveRefused(
                    f"slot(s) {slot_ranges(busy)} are fenced by another move on {shard_label(shard)}"
                )

    def _on(self, shard: int, *, as_mover: bool = False) -> _ShardTransaction:
        return _ShardTransaction(self.databases.shards[shard], shard, as_mover)

    def _exclusive(self, move_id: int) -> _MoverLock:
        return _MoverLock(self.databases.core, move_id)

    async def _set_phase(self, move: SlotMove, phase: str, **extra: Any) -> SlotMove:
        async with unavailable_as("core database"), self.databases.core.begin() as conn:
            await conn.execute(_SET_PHASE, {"id": move.move_id, "phase": phase})
            if "skus_copied" in extra:
                await conn.execute(_COPIED, {"id": move.move_id, "n": extra["skus_copied"]})
        log.info("move %s: %s", move.move_id, phase)
        return await self.get(move.move_id)

    async def _record_copied(self, move: SlotMove, copied: int) -> None:
        async with unavailable_as("core database"), self.databases.core.begin() as conn:
            await conn.execute(_COPIED, {"id": move.move_id, "n": copied})
        await self._report(await self.get(move.move_id))

    async def _report(self, move: SlotMove) -> None:
        if self.progress is not None:
            outcome = self.progress(move)
            if outcome is not None:
                await outcome


class _ShardTransaction:
    """One transaction on a shard, with its connection errors mapped; ``as_mover`` marks it as the
    mover's copy (no guard, no stock events)."""

    def __init__(self, engine: AsyncEngine, index: int, as_mover: bool) -> None:
        self._engine, self._label, self._as_mover = engine, shard_label(index), as_mover

    async def __aenter__(self) -> AsyncConnection:
        self._errors = unavailable_as(self._label)
        await self._errors.__aenter__()
        self._transaction = self._engine.begin()
        conn = await self._transaction.__aenter__()
        if self._as_mover:
            await conn.execute(_AS_MOVER)
        return conn

    async def __aexit__(self, *exc: Any) -> bool:
        try:
            await self._transaction.__aexit__(*exc)
        except BaseException as raised:
            return bool(await self._errors.__aexit__(type(raised), raised, raised.__traceback__))
        return bool(await self._errors.__aexit__(*exc))


class _MoverLock:
    """A session advisory lock on the core database for as long as one mover runs one move."""

    _conn: AsyncConnection

    def __init__(self, core: AsyncEngine, move_id: int) -> None:
        self._core, self._move_id = core, move_id

    async def __aenter__(self) -> None:
        self._conn = await self._core.connect()
        taken = await self._conn.scalar(
            text("SELECT pg_try_advisory_lock(:key, :id)"), {"key": _MOVER_LOCK, "id": self._move_id}
        )
        await self._conn.commit()
        if not taken:
            await self._conn.close()
            raise MoveRefused(f"another mover is running move {self._move_id}")

    async def __aexit__(self, *exc: Any) -> None:
        # The pool keeps the session, so the lock is let go of explicitly; a mover that dies takes
        # its session, and with it the lock, along.
        try:
            await self._conn.scalar(
                text("SELECT pg_advisory_unlock(:key, :id)"), {"key": _MOVER_LOCK, "id": self._move_id}
            )
            await self._conn.commit()
        except Exception:
            await self._conn.invalidate()
            raise
        finally:
            await self._conn.close()


async def _rows(conn: AsyncConnection, statement: Any, **params: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in (await conn.execute(statement, params)).mappings()]


def _move(row: Any) -> SlotMove:
    return SlotMove(
        move_id=row.move_id,
        slots=list(row.slots),
        source=row.source,
        target=row.target,
        phase=row.phase,
        skus_copied=row.skus_copied,
        fence_ms=row.fence_ms,
    )


def _json(rows: list[dict[str, Any]]) -> str:
    """Rows as one jsonb parameter: one round trip however many rows, and typed on the way in."""
    return json.dumps(rows, default=_iso)


def _iso(value: Any) -> str:
    return str(value.isoformat())


def slot_ranges(slots: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3,7``: how slot lists are written on the command line too."""
    parts: list[str] = []
    start = prev = None
    for slot in slots:
        if prev is not None and slot == prev + 1:
            prev = slot
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = slot
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)
