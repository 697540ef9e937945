"""Inventory activities: reserve, release, pin, commit and expire, each one store call."""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity

from activities.errors import domain_errors_as_application_errors
from activities.models import CommitInput, ExpireOutput, PinInput, ReleaseInput, ReserveInput
from invsaga.domain.errors import ShardUnavailable
from invsaga.domain.stock import ReserveOutcome, ReserveRequest, TransitionOutcome
from invsaga.store.batching import ReservationBatcher
from invsaga.store.stock import StockStore

log = logging.getLogger("invsaga.sweeper")


class InventoryActivities:
    def __init__(self, store: StockStore, batcher: ReservationBatcher | None = None) -> None:
        self.store = store
        self.batcher = batcher

    @activity.defn
    @domain_errors_as_application_errors
    async def reserve_stock(self, inp: ReserveInput) -> ReserveOutcome:
        request = ReserveRequest(
            order_id=inp.order_id, lines=inp.lines, ttl_seconds=inp.ttl_seconds, allocation=inp.allocation
        )
        if self.batcher is not None:
            return await self.batcher.reserve(inp.shard, request)
        return await self.store.reserve(inp.shard, request)

    @activity.defn
    @domain_errors_as_application_errors
    async def release_stock(self, inp: ReleaseInput) -> TransitionOutcome:
        return await self.store.release(inp.shard, inp.order_id, inp.lines)

    @activity.defn
    @domain_errors_as_application_errors
    async def pin_stock(self, inp: PinInput) -> TransitionOutcome:
        return await self.store.pin(inp.shard, inp.order_id, inp.lines)

    @activity.defn
    @domain_errors_as_application_errors
    async def commit_stock(self, inp: CommitInput) -> TransitionOutcome:
        return await self.store.commit(inp.shard, inp.order_id, inp.lines)

    @activity.defn
    @domain_errors_as_application_errors
    async def expire_holds(self) -> ExpireOutput:
        """Sweep every shard that answers. A shard that is down is reported, not raised: the schedule's
        next run sweeps it, and failing the run would only fill the Web UI with FAILED sweeps while
        the outage lasts (the shard's own checkouts say it is down)."""
        shards = self.store.databases.serving()
        swept = await asyncio.gather(*(self.store.expire_all(s) for s in shards), return_exceptions=True)
        for outcome in swept:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ShardUnavailable):
                raise outcome
        down = [
            shard for shard, outcome in zip(shards, swept, strict=True) if isinstance(outcome, BaseException)
        ]
        if down:
            log.warning("hold sweep skipped unreachable shard(s) %s; the next run sweeps them", down)
        return ExpireOutput(
            expired_per_shard=[outcome if isinstance(outcome, int) else 0 for outcome in swept],
            unavailable_shards=down,
        )
