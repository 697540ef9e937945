"""Inventory activities: reserve, release, pin, commit and expire, each one store call."""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.errors import domain_errors_as_application_errors
from activities.models import CommitInput, ExpireOutput, PinInput, ReleaseInput, ReserveInput
from invsaga.domain.stock import ReserveOutcome, ReserveRequest, TransitionOutcome
from invsaga.store.batching import ReservationBatcher
from invsaga.store.stock import StockStore


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
        return await self.store.commit(inp.shard, inp.order_id)

    @activity.defn
    @domain_errors_as_application_errors
    async def expire_holds(self) -> ExpireOutput:
        shards = range(len(self.store.databases.shards))
        counts = await asyncio.gather(*(self.store.expire_all(shard) for shard in shards))
        return ExpireOutput(expired_per_shard=list(counts))
