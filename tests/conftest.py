"""Shared fixtures: real Postgres servers (two shards and a core database) for the whole session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text

from invsaga.local.postgres import PgFleet, start_fleet
from invsaga.settings import Settings, load_settings
from store.databases import Databases, migrate_all
from store.stock import StockStore

TEST_SHARDS = int(os.environ.get("INVSAGA_TEST_SHARDS", "2"))


@pytest.fixture(scope="session")
def pg_fleet() -> Iterator[PgFleet]:
    fleet = start_fleet(TEST_SHARDS)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="session")
def settings(pg_fleet: PgFleet) -> Settings:
    return load_settings(shard_dsns=",".join(pg_fleet.shard_dsns), core_dsn=pg_fleet.core_dsn, pool_size=40)


@pytest.fixture(scope="session")
async def databases(settings: Settings) -> AsyncIterator[Databases]:
    await migrate_all(settings)
    dbs = await Databases.open(settings)
    try:
        yield dbs
    finally:
        await dbs.close()


@pytest.fixture(scope="session")
def store(databases: Databases) -> StockStore:
    return StockStore(databases)


@pytest.fixture
async def clean_shards(databases: Databases) -> None:
    """Empty every shard's stock tables so a test starts from nothing."""
    for engine in databases.shards:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE stock_levels, reservations, stock_movements"))


@pytest.fixture(params=["direct", "batched"])
async def reserve(request: pytest.FixtureRequest, store: StockStore):  # type: ignore[no-untyped-def]
    """The reserve path under test: one transaction per call, or group commit through the batcher."""
    if request.param == "direct":
        yield store.reserve
        return
    from store.batching import ReservationBatcher

    batcher = ReservationBatcher(store)
    try:
        yield batcher.reserve
    finally:
        await batcher.aclose()
