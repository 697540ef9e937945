"""Engines for every inventory shard and the core database, and the one place that turns a lost
connection into ``ShardUnavailable``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from invsaga.domain.errors import ConfigurationError, ShardUnavailable
from invsaga.settings import Settings
from invsaga.store.migrations import MigrationResult, check_schema, migrate
from invsaga.store.routing import ShardRouter, load_router

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


@asynccontextmanager
async def unavailable_as(label: str) -> AsyncIterator[None]:
    """Map connection-level failures (not SQL errors) to ``ShardUnavailable`` naming the database."""
    try:
        yield
    except _CONNECTION_ERRORS as exc:
        raise ShardUnavailable(f"{label} is unreachable: {exc}", database=label) from exc
    except sa_exc.DBAPIError as exc:
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
    """Every database the system talks to. Built once per process and shared."""

    shards: list[AsyncEngine]
    core: AsyncEngine
    router: ShardRouter
    #: ``shards`` and ``core`` for single-statement work (see ``autocommit``).
    shards_autocommit: list[AsyncEngine] = field(init=False)
    core_autocommit: AsyncEngine = field(init=False)

    def __post_init__(self) -> None:
        self.shards_autocommit = [autocommit(engine) for engine in self.shards]
        self.core_autocommit = autocommit(self.core)

    @classmethod
    async def open(cls, settings: Settings, *, check: bool = True) -> Databases:
        shard_urls = settings.shard_urls
        core = make_engine(settings.core_url, pool_size=max(2, settings.pool_size // 2))
        shards = [make_engine(url, pool_size=settings.pool_size) for url in shard_urls]
        try:
            async with unavailable_as("core database"):
                if check:
                    await check_schema(core, "core", label="core database")
                router = await load_router(core, len(shards))
            if check:
                await _verify_reachable_shards(shards)
        except BaseException:
            await asyncio.gather(*(e.dispose() for e in [core, *shards]))
            raise
        return cls(shards=shards, core=core, router=router)

    async def close(self) -> None:
        await asyncio.gather(*(engine.dispose() for engine in [self.core, *self.shards]))


async def _verify_reachable_shards(shards: list[AsyncEngine]) -> None:
    """Check every shard that answers. One that does not is logged, not fatal: each read or change
    routes to one shard, so the SKUs on the others keep working, and the down shard's own operations
    answer ShardUnavailable when they reach it. A shard that answers wrongly (another shard's data, an
    old schema) still stops the process, since it would answer with wrong data."""
    outcomes = await asyncio.gather(
        *(verify_shard(engine, index) for index, engine in enumerate(shards)), return_exceptions=True
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


async def migrate_all(settings: Settings) -> list[MigrationResult]:
    """Migrate the core database and every shard (concurrently), stamping each shard's identity."""
    core = make_engine(settings.core_url, pool_size=1)
    shards = [make_engine(url, pool_size=1) for url in settings.shard_urls]

    async def one_shard(index: int, engine: AsyncEngine) -> MigrationResult:
        label = shard_label(index)
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
        await verify_shard(engine, index)
        return result

    try:
        async with unavailable_as("core database"):
            core_result = await migrate(core, "core", label="core database")
            await load_router(core, len(shards))
        shard_results = await asyncio.gather(*(one_shard(i, e) for i, e in enumerate(shards)))
    finally:
        await asyncio.gather(*(e.dispose() for e in [core, *shards]))
    return [core_result, *shard_results]
