"""What every part of the stock store shares: the shard engines, and the check that lines live there."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.domain.errors import InvalidInput
from invsaga.domain.stock import StockLine
from invsaga.store.databases import Databases
from invsaga.store.routing import ShardRouter


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
                raise InvalidInput(
                    f"sku {line.sku!r} lives on shard {self.router.shard_of(line.sku)}, not {shard}"
                )
