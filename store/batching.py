"""Group commit for reservations: concurrent reserve calls for one shard share one transaction.

A hot SKU is limited by how many transactions per second can take its row lock and fsync. Coalescing
the requests that arrive within a few milliseconds into one ``reserve_stock`` call turns N commits into
one, while each request keeps its own semantics (all-or-nothing, first come first served, idempotent by
order id, exact shortages, ledger rows), because the batch statement applies them one by one in order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from domain.stock import ReserveOutcome, ReserveRequest
from store.stock import StockStore


@dataclass
class _Pending:
    request: ReserveRequest
    future: asyncio.Future[ReserveOutcome]


@dataclass
class _ShardQueue:
    pending: list[_Pending] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    in_flight: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(4))


class ReservationBatcher:
    """Drop-in for ``StockStore.reserve`` that batches per shard within one process.

    ``max_wait`` bounds the latency a request can pay to wait for company; ``max_batch`` caps one
    transaction. While a shard already has ``max_in_flight`` batches running, new requests keep
    gathering, so batches grow with load instead of queueing transactions on the row lock.
    """

    def __init__(
        self,
        store: StockStore,
        *,
        max_wait: float = 0.002,
        max_batch: int = 512,
        max_in_flight: int = 4,
    ) -> None:
        self.store = store
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queues: dict[int, _ShardQueue] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def reserve(self, shard: int, request: ReserveRequest) -> ReserveOutcome:
        self.store.validate_routing(shard, request.lines)
        queue = self._queues.get(shard)
        if queue is None:
            queue = self._queues[shard] = _ShardQueue(in_flight=asyncio.Semaphore(self.max_in_flight))
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future())
        queue.pending.append(pending)
        if len(queue.pending) >= self.max_batch:
            self._flush(shard)
        elif queue.timer is None:
            queue.timer = loop.call_later(self.max_wait, self._flush, shard)
        return await pending.future

    def _flush(self, shard: int) -> None:
        queue = self._queues[shard]
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        batch, queue.pending = queue.pending[: self.max_batch], queue.pending[self.max_batch :]
        if queue.pending:
            queue.timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush, shard)
        if batch:
            task = asyncio.create_task(self._run(shard, queue, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, shard: int, queue: _ShardQueue, batch: list[_Pending]) -> None:
        async with queue.in_flight:
            # Requests that arrived while we waited for a slot ride along, up to the cap.
            room = self.max_batch - len(batch)
            if room > 0 and queue.pending:
                batch += queue.pending[:room]
                queue.pending = queue.pending[room:]
                if not queue.pending and queue.timer is not None:
                    queue.timer.cancel()
                    queue.timer = None
            live = [p for p in batch if not p.future.done()]
            try:
                outcomes = await self.store.reserve_batch(shard, [p.request for p in live])
            except BaseException as exc:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for p, outcome in zip(live, outcomes, strict=True):
                if not p.future.done():
                    p.future.set_result(outcome)

    async def aclose(self) -> None:
        """Flush what is queued and wait for every batch in flight."""
        for shard in list(self._queues):
            self._flush(shard)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
