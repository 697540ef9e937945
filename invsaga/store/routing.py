"""Stable SKU-to-shard routing through a fixed number of slots.

A SKU hashes (blake2b, never Python's salted ``hash()``) to one of ``SLOT_COUNT`` slots, and the slot
map, persisted in the core database, assigns each slot to a shard. All locations of a SKU share its
slot. Adding a shard later means moving whole slots, not rehashing every SKU
(``invsaga.store.slot_move``). The map carries the epoch it was read at: every change to it bumps
the epoch, and a shard refuses a write routed by a map older than the move of the row's slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.domain.errors import ConfigurationError
from invsaga.domain.stock import StockLine
from invsaga.store.tables import slot_map

SLOT_COUNT = 4096


def slot_of(sku: str) -> int:
    digest = blake2b(sku.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SLOT_COUNT


class ShardRouter:
    def __init__(self, slot_to_shard: Sequence[int], *, epoch: int = 0) -> None:
        if len(slot_to_shard) != SLOT_COUNT:
            raise ConfigurationError(f"slot map has {len(slot_to_shard)} slots, need {SLOT_COUNT}")
        self._slots = list(slot_to_shard)
        self.shard_count = max(self._slots) + 1
        self.epoch = epoch

    @property
    def slots(self) -> list[int]:
        """The shard of every slot, by slot."""
        return list(self._slots)

    def shard_of_slot(self, slot: int) -> int:
        return self._slots[slot]

    @classmethod
    def evenly(cls, shard_count: int) -> ShardRouter:
        if shard_count < 1:
            raise ConfigurationError("at least one shard is needed")
        return cls([slot % shard_count for slot in range(SLOT_COUNT)])

    def shard_of(self, sku: str) -> int:
        return self._slots[slot_of(sku)]

    def group_lines(self, lines: Iterable[StockLine]) -> dict[int, list[StockLine]]:
        """Lines per shard, each group sorted by key so every caller touches rows in one order."""
        groups: dict[int, list[StockLine]] = {}
        for line in lines:
            groups.setdefault(self.shard_of(line.sku), []).append(line)
        return {shard: sorted(group, key=lambda ln: ln.key) for shard, group in sorted(groups.items())}

    def group_skus(self, skus: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for sku in skus:
            groups.setdefault(self.shard_of(sku), []).append(sku)
        return groups


_EPOCH = text("SELECT epoch FROM routing_epoch")


async def load_router(core: AsyncEngine, shard_count: int) -> ShardRouter:
    """Read the persisted slot map, creating the even default on first use."""
    async with core.begin() as conn:
        existing = await conn.scalar(select(func.count()).select_from(slot_map))
        if not existing:
            rows = [{"slot": s, "shard_index": s % shard_count} for s in range(SLOT_COUNT)]
            await conn.execute(pg_insert(slot_map).on_conflict_do_nothing(), rows)
    router = await read_router(core)
    if router.shard_count > shard_count:
        raise ConfigurationError(
            f"the slot map routes to {router.shard_count} shards but only {shard_count} "
            "are known (the shard registry, or INVSAGA_SHARD_DSNS)"
        )
    return router


async def read_router(core: AsyncEngine | AsyncConnection) -> ShardRouter:
    """The slot map and its epoch, read in one snapshot."""
    if isinstance(core, AsyncEngine):
        async with core.connect() as conn, conn.begin():
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            return await read_router(conn)
    epoch = await core.scalar(_EPOCH)
    result = await core.execute(select(slot_map.c.slot, slot_map.c.shard_index))
    mapping = {slot: shard for slot, shard in result.all()}
    if len(mapping) != SLOT_COUNT:
        raise ConfigurationError(f"the slot map holds {len(mapping)} of {SLOT_COUNT} slots")
    return ShardRouter([mapping[s] for s in range(SLOT_COUNT)], epoch=int(epoch or 0))


__all__ = ["SLOT_COUNT", "ShardRouter", "load_router", "read_router", "slot_of"]
