"""What every part of the stock store shares: the shard engines, and the check that lines live there."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import Integer

from invsaga.domain.errors import InvalidInput, SlotMoving
from invsaga.domain.stock import StockLine
from invsaga.store.databases import Databases, shard_label
from invsaga.store.routing import ShardRouter, slot_of

# The given slots that left this shard or are not its yet.
_NOT_SERVED = text(
    "SELECT slot, moved_to, epoch FROM slot_fences"
    " WHERE state IN ('moved_out', 'importing') AND slot = ANY (:slots)"
    " ORDER BY epoch DESC LIMIT 1"
).bindparams(bindparam("slots", type_=ARRAY(Integer)))


async def refuse_if_moved(conn: AsyncConnection, shard: int, skus: Iterable[str] = ()) -> None:
    """Raise ``SlotMoving`` if a slot of ``skus`` is not served here.

    A write for a row that is still here is refused by the shard itself (guard_moving_slots). This is
    for a call that found *nothing* on the shard: once a move has deleted its rows from the source, a
    process routing by an old map would read "unknown SKU" or "no hold" there and answer wrongly, so
    before concluding that, a call asks whether the row's slot left."""
    slots = sorted({slot_of(sku) for sku in skus})
    if not slots:  # a call that names no line cannot tell; it answers as before
        return
    found = (await conn.execute(_NOT_SERVED, {"slots": slots})).first()
    if found is not None:
        label = shard_label(shard)
        where = f"moved to shard {found.moved_to}" if found.moved_to is not None else "not served here yet"
        raise SlotMoving(f"{label}: slot {found.slot} {where}", database=label, epoch=int(found.epoch))


class ShardedStore:
    """Stateless apart from its engines."""

    def __init__(self, databases: Databases) -> None:
        self.databases = databases

    @property
    def router(self) -> ShardRouter:
        """The process' current slot map (it is replaced when the map changes)."""
        return self.databases.router

    def _engine(self, shard: int) -> AsyncEngine:
        if not 0 <= shard < len(self.databases.shards):
            raise InvalidInput(f"no shard {shard}; there are {len(self.databases.shards)}")
        return self.databases.shards[shard]

    def _autocommit(self, shard: int) -> AsyncEngine:
        self._engine(shard)
        return self.databases.shards_autocommit[shard]

    def validate_routing(self, shard: int, lines: Sequence[StockLine]) -> None:
        """Refuse lines that do not live on ``shard``: a misrouted line would read as unknown stock."""
        self._engine(shard)
        for line in lines:
            if self.router.shard_of(line.sku) != shard:
                # Routed by an older map than this process' (its slot moved since): route again.
                raise SlotMoving(
                    f"sku {line.sku!r} lives on shard {self.router.shard_of(line.sku)}, not {shard}",
                    database=shard_label(shard),
                    epoch=self.router.epoch,
                )
