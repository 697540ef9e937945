"""Engines for every inventory shard and the core database, and the one place that turns a lost
connection into ``ShardUnavailable``."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from invsaga.domain.errors import ConfigurationError, ShardUnavailable, SlotMoving
from invsaga.settings import Settings
from invsaga.store.migrations import MigrationResult, check_schema, migrate
from invsaga.store.registry import ShardEntry, read_registry, register_listed, resolve_dsn
from invsaga.store.routing import ShardRouter, load_router, read_router
from invsaga.store.slot_backfill import backfill_slots

log = logging.getLogger("invsaga.store")

_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    sa_exc.TimeoutError,
)


def make_engine(url: URL, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        connect_args={"timeout": 5, "server_settings": {"application_name": "inventory-saga"}},
    )


#: SQLSTATEs guard_moving_slots raises (schema/definitions/shard/guard_moving_slots.sql): the slot is
#: fenced or importing (retry), or it moved at the epoch its DETAIL names (reload the map, retry).
_SLOT_REFUSALS = {"ISM01", "ISM02"}
_EPOCH_DETAIL = re.compile(r"epoch=(\d+)")


def _slot_refusal(exc: sa_exc.DBAPIError, label: str) -> SlotMoving | None:
    if getattr(exc.orig, "sqlstate", None) not in _SLOT_REFUSALS:
        return None
    cause = getattr(exc.orig, "__cause__", None)
    message = getattr(cause, "message", None) or str(exc.orig)
    found = _EPOCH_DETAIL.search(getattr(cause, "detail", None) or "")
    return SlotMoving(f"{label}: {message}", database=label, epoch=int(found.group(1)) if found else 0)


@asynccontextmanager
async def unavailable_as(label: str) -> AsyncIterator[None]:
    """Map connection-level failures (not SQL errors) to ``ShardUnavailable`` naming the database,
    and a shard's refusal of a write to a moving slot to ``SlotMoving``."""
    try:
        yield
    except _CONNECTION_ERRORS as exc:
        raise ShardUnavailable(f"{label} is unreachable: {exc}", database=label) from exc
    except sa_exc.DBAPIError as exc:
        refusal = _slot_refusal(exc, label)
        if refusal is not None:
            raise refusal from exc
        if exc.connection_invalidated or isinstance(exc.orig, _CONNECTION_ERRORS):
            raise ShardUnavailable(f"{label} is unreachable: {exc.orig}", database=label) from exc
        cause = getattr(exc.orig, "__cause__", None)
        if isinstance(cause, _CONNECTION_ERRORS):
            raise ShardUnavailable(f"{label} is unreachable: {cause}", database=label) from exc
        raise


def shard_label(index: int) -> str:
    return f"shard {index}"


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for work that is one statement: one round trip, where an explicit transaction
    adds a BEGIN and a COMMIT (or ROLLBACK). One statement is still atomic and reads one snapshot."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@dataclass
class Databases:
    """Every database the system talks to. Built once per process and shared.

    The shard list and the router change while the process runs: ``refresh`` reloads them from the
    core database (the registry and the slot map), appending an engine for each new shard. Indexes
    never change meaning, so an engine, once here, stays at its index.
    """

    shards: list[AsyncEngine]
    core: AsyncEngine
    router: ShardRouter
    #: Where new shards' DSN references resolve (this process' environment); None: no refresh.
    settings: Settings | None = None
    #: The registry as last read; empty for a deployment that registered nothing (the env list).
    registry: list[ShardEntry] = field(default_factory=list)
    #: ``shards`` and ``core`` for single-statement work (see ``autocommit``).
    shards_autocommit: list[AsyncEngine] = field(init=False)
    core_autocommit: AsyncEngine = field(init=False)
    _refreshing: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _watch: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.shards_autocommit = [autocommit(engine) for engine in self.shards]
        self.core_autocommit = autocommit(self.core)

    @classmethod
    async def open(cls, settings: Settings, *, check: bool = True, watch: bool = False) -> Databases:
        """``watch``: follow registry and slot-map changes as they happen (a long-running process);
        without it the map is still reloaded whenever a shard refuses it as stale."""
        core = make_engine(settings.core_url, pool_size=max(2, settings.pool_size // 2))
        shards: list[AsyncEngine] = []
        try:
            async with unavailable_as("core database"):
                if check:
                    await check_schema(core, "core", label="core database")
                registry = await read_registry(core)
                urls = _shard_urls(registry, settings)
                shards = [make_engine(url, pool_size=settings.pool_size) for url in urls]
                router = await load_router(core, len(shards))
            if check:
                await _verify_reachable_shards(shards, _serving(registry, len(shards)))
        except BaseException:
            await asyncio.gather(*(e.dispose() for e in [core, *shards]))
            raise
        databases = cls(shards=shards, core=core, router=router, settings=settings, registry=registry)
        if watch:
            from invsaga.store.routing_watch import watch_routing

            databases._watch = asyncio.create_task(watch_routing(databases), name="invsaga-routing-watch")
        return databases

    async def refresh(self) -> ShardRouter:
        """Reload the registry and the slot map; open engines for shards registered since."""
        async with self._refreshing:
            async with unavailable_as("core database"):
                registry = await read_registry(self.core)
                router = await read_router(self.core)
            if self.settings is not None and registry:
                for url in _shard_urls(registry, self.settings)[len(self.shards) :]:
                    engine = make_engine(url, pool_size=self.settings.pool_size)
                    self.shards.append(engine)
                    self.shards_autocommit.append(autocommit(engine))
            if router.shard_count > len(self.shards):
                raise ConfigurationError(
                    f"the slot map routes to {router.shard_count} shards but this process knows "
                    f"{len(self.shards)}"
                )
            if router.epoch >= self.router.epoch:
                self.registry, self.router = registry, router
            return self.router

    async def catch_up(self, epoch: int) -> ShardRouter:
        """The router, reloaded first if it is older than ``epoch``."""
        if self.router.epoch < epoch:
            return await self.refresh()
        return self.router

    def serving(self) -> list[int]:
        """The shards that hold data: every known one but those removed."""
        return _serving(self.registry, len(self.shards))

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await asyncio.gather(*(engine.dispose() for engine in [self.core, *self.shards]))


def _shard_urls(registry: list[ShardEntry], settings: Settings) -> list[URL]:
    """One URL per shard index: from the registry, or INVSAGA_SHARD_DSNS while nothing is registered."""
    if not registry:
        return settings.shard_urls
    if [entry.index for entry in registry] != list(range(len(registry))):
        raise ConfigurationError("the shard registry's indexes are not 0..N-1")
    return [resolve_dsn(entry.dsn, settings) for entry in registry]


def _serving(registry: list[ShardEntry], count: int) -> list[int]:
    removed = {entry.index for entry in registry if entry.state == "removed"}
    return [index for index in range(count) if index not in removed]


async def _verify_reachable_shards(shards: list[AsyncEngine], indexes: list[int]) -> None:
    """Check every shard that answers. One that does not is logged, not fatal: each read or change
    routes to one shard, so the SKUs on the others keep working, and the down shard's own operations
    answer ShardUnavailable when they reach it. A shard that answers wrongly (another shard's data, an
    old schema) still stops the process, since it would answer with wrong data."""
    outcomes = await asyncio.gather(
        *(verify_shard(shards[index], index) for index in indexes), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, ShardUnavailable):
            raise outcome
    for outcome in outcomes:
        if isinstance(outcome, ShardUnavailable):
            # Info, not warning: a CLI read of a healthy shard's SKU must not print it (readiness
            # reports the shard down; its own operations say so when they reach it).
            log.info("%s; carrying on with the other shards (not schema-checked: it did not answer)", outcome)


async def verify_shard(engine: AsyncEngine, index: int) -> None:
    """A shard must be migrated and must be the shard it was first migrated as."""
    label = shard_label(index)
    async with unavailable_as(label):
        await check_schema(engine, "shard", label=label)
        async with engine.connect() as conn:
            recorded = await conn.scalar(text("SELECT shard_index FROM shard_identity"))
    if recorded is not None and recorded != index:
        raise ConfigurationError(
            f"INVSAGA_SHARD_DSNS lists shard {recorded} in position {index}; "
            "keep the DSNs in their original order"
        )


async def migrate_shard(url: URL, index: int) -> MigrationResult:
    """Migrate one shard, stamp its identity (index) and fill the slot of rows that lack one."""
    engine = make_engine(url, pool_size=1)
    label = shard_label(index)
    try:
        async with unavailable_as(label):
            result = await migrate(engine, "shard", label=label)
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO shard_identity (shard_index) VALUES (:i)"
                        " ON CONFLICT (singleton) DO NOTHING"
                    ),
                    {"i": index},
                )
            await backfill_slots(engine)
        await verify_shard(engine, index)
    finally:
        await engine.dispose()
    return result


async def migrate_all(settings: Settings) -> list[MigrationResult]:
    """Migrate the core database, register INVSAGA_SHARD_DSNS's shards where the registry lacks them,
    then migrate every registered shard but the removed ones (concurrently)."""
    core = make_engine(settings.core_url, pool_size=1)
    try:
        async with unavailable_as("core database"):
            core_result = await migrate(core, "core", label="core database")
            if settings.shard_dsns:
                await register_listed(core, len(settings.shard_dsns))
            registry = await read_registry(core)
            urls = _shard_urls(registry, settings)
            await load_router(core, len(urls))
    finally:
        await core.dispose()
    serving = _serving(registry, len(urls))
    shard_results = await asyncio.gather(*(migrate_shard(urls[i], i) for i in serving))
    return [core_result, *shard_results]
