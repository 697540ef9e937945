"""Is this checkout request new? Concurrent askers share one database read.

The sold-out fast path may refuse a buyer from memory only if nothing can have happened for the request
yet: its Idempotency-Key was never claimed and no checkout has recorded its order, on any API process.
That is a fact of the shared core database, not of this process, so every refusal still reads it (an
in-memory set of the keys this process claimed would miss a first attempt made on another process).

What this module saves is the round trip per buyer. Askers queue; one read at a time answers everyone
queued before it started, in one statement (``unused_among``). A read starts only after each of its
askers arrived, so every answer is at least as fresh as a read of its own would have been. A failed
read fails its askers, who then take the ordinary route.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.store.idempotency import unused_among

#: Keeps one statement's arrays, and its plan, small; more askers wait for the next read.
MAX_BATCH = 256

_Ask = tuple[tuple[str, str, str], "asyncio.Future[bool]"]


class FreshRequests:
    def __init__(self, core: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        #: Pass ``Databases.core_autocommit``: one statement, no transaction to open and close.
        self.core = core
        self.max_batch = max_batch
        self._queued: list[_Ask] = []
        self._reader: asyncio.Task[None] | None = None
        #: Reads made and requests answered, for tests and benchmarks.
        self.reads = 0
        self.asked = 0

    async def is_unused(self, principal: str, key: str, *, order_id: str) -> bool:
        """True when ``key`` was never claimed by ``principal`` and no checkout recorded ``order_id``."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append(((principal, key, order_id), answer))
        self.asked += 1
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all(), name="fresh-requests")
        return await answer

    async def _read_all(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[: self.max_batch], self._queued[self.max_batch :]
                self.reads += 1
                try:
                    unused = await unused_among(self.core, [request for request, _ in batch])
                except asyncio.CancelledError:
                    # The app shuts down: nobody may wait forever.
                    for _, answer in batch:
                        answer.cancel()
                    raise
                except Exception as exc:
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (_, answer), fresh in zip(batch, unused, strict=True):
                    if not answer.done():
                        answer.set_result(fresh)
        finally:
            self._reader = None
            for _, answer in self._queued:
                answer.cancel()
            self._queued = []
