"""Stable SKU-to-shard routing through a fixed number of slots.

A SKU hashes (blake2b, never Python's salted ``hash()``) to one of ``SLOT_COUNT`` slots, and the slot
map, persisted in the core database, assigns each slot to a shard. All locations of a SKU share its
slot. Adding a shard later means moving whole slots, not rehashing every SKU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.domain.errors import ConfigurationError
from invsaga.domain.stock import StockLine
from invsaga.store.tables import slot_map

SLOT_COUNT = 4096


def slot_of(sku: str) -> int:
    digest = blake2b(sku.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SLOT_COUNT


class ShardRouter:
    def __init__(self, slot_to_shard: Sequence[int]) -> None:
        if len(slot_to_shard) != SLOT_COUNT:
            raise ConfigurationError(f"slot map has {len(slot_to_shard)} slots, need {SLOT_COUNT}")
        self._slots = list(slot_to_shard)
        self.shard_count = max(self._slots) + 1

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


async def load_router(core: AsyncEngine, shard_count: int) -> ShardRouter:
    """Read the persisted slot map, creating the even default on first use."""
    async with core.begin() as conn:
        existing = await conn.scalar(select(func.count()).select_from(slot_map))
        if not existing:
            rows = [{"slot": s, "shard_index": s % shard_count} for s in range(SLOT_COUNT)]
            await conn.execute(pg_insert(slot_map).on_conflict_do_nothing(), rows)
        result = await conn.execute(select(slot_map.c.slot, slot_map.c.shard_index))
        mapping = {slot: shard for slot, shard in result.all()}
    if len(mapping) != SLOT_COUNT:
        raise ConfigurationError(f"the slot map holds {len(mapping)} of {SLOT_COUNT} slots")
    router = ShardRouter([mapping[s] for s in range(SLOT_COUNT)])
    if router.shard_count > shard_count:
        raise ConfigurationError(
            f"the slot map routes to {router.shard_count} shards but only {shard_count} "
            "are configured in INVSAGA_SHARD_DSNS"
        )
    return router


__all__ = ["SLOT_COUNT", "ShardRouter", "load_router", "slot_of"]
