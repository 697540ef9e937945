"""Migrations across every shard: re-running is safe, older schemas upgrade, newer ones are refused,
and a shard listed in the wrong position is caught."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from invsaga.domain.errors import ConfigurationError, SchemaMismatch
from invsaga.settings import load_settings, to_asyncpg_url
from invsaga.store.databases import Databases, make_engine, migrate_all
from invsaga.store.migrations import check_schema, latest_version, migrate, migrations_for
from invsaga.store.routing import slot_of


@pytest.fixture
def fresh_dsns(pg_fleet):
    """New, empty databases: a core and two shards, on the fleet's servers."""
    tag = uuid.uuid4().hex[:8]
    assert pg_fleet.core is not None
    core = pg_fleet.core.create_database(f"core_{tag}")
    shards = [server.create_database(f"inv_{tag}") for server in pg_fleet.shards[:2]]
    return core, shards


async def test_migrating_twice_changes_nothing_the_second_time(fresh_dsns):
    core, shards = fresh_dsns
    settings = load_settings(core_dsn=core, shard_dsns=",".join(shards))
    first = await migrate_all(settings)
    second = await migrate_all(settings)
    assert [(r.before, r.after) for r in first] == [(0, latest_version("core"))] + [
        (0, latest_version("shard"))
    ] * 2
    assert all(r.before == r.after for r in second)
    databases = await Databases.open(settings)
    await databases.close()


async def test_an_older_schema_is_upgraded(fresh_dsns):
    core, _ = fresh_dsns
    engine = make_engine(to_asyncpg_url(core), pool_size=1)
    try:
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(migrations_for("core")[0].sql)  # type: ignore[union-attr]
            await conn.execute(
                text(
                    "CREATE TABLE schema_migrations (version int PRIMARY KEY, kind text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            await conn.execute(text("INSERT INTO schema_migrations (version, kind) VALUES (1, 'core')"))
        with pytest.raises(SchemaMismatch, match="run `invsaga db migrate`"):
            await check_schema(engine, "core", label="core")
        result = await migrate(engine, "core", label="core")
        assert (result.before, result.after) == (1, latest_version("core"))
        await check_schema(engine, "core", label="core")
    finally:
        await engine.dispose()


async def test_a_newer_schema_is_refused_and_left_alone(fresh_dsns):
    _, shards = fresh_dsns
    engine = make_engine(to_asyncpg_url(shards[0]), pool_size=1)
    try:
        await migrate(engine, "shard", label="shard 0")
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO schema_migrations (version, kind) VALUES (99, 'shard')"))
        with pytest.raises(SchemaMismatch, match="newer than this release"):
            await migrate(engine, "shard", label="shard 0")
        with pytest.raises(SchemaMismatch, match="upgrade inventory-saga"):
            await check_schema(engine, "shard", label="shard 0")
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT max(version) FROM schema_migrations")) == 99
    finally:
        await engine.dispose()


async def test_shards_listed_in_another_order_are_refused(fresh_dsns):
    core, shards = fresh_dsns
    await migrate_all(load_settings(core_dsn=core, shard_dsns=",".join(shards)))
    swapped = load_settings(core_dsn=core, shard_dsns=",".join(reversed(shards)))
    with pytest.raises(ConfigurationError, match="original order"):
        await Databases.open(swapped)


async def test_the_slot_map_is_persisted_once(fresh_dsns):
    core, shards = fresh_dsns
    settings = load_settings(core_dsn=core, shard_dsns=",".join(shards))
    await migrate_all(settings)
    databases = await Databases.open(settings)
    try:
        async with databases.core.begin() as conn:
            # Move one slot by hand, as a resharding step would; reopening must keep it.
            await conn.execute(text("UPDATE slot_map SET shard_index = 1 - shard_index WHERE slot = 7"))
    finally:
        await databases.close()
    reopened = await Databases.open(settings)
    try:
        moved = next(f"S{n}" for n in range(100_000) if slot_of(f"S{n}") == 7)
        assert reopened.router.shard_of(moved) == 1 - (7 % 2)
    finally:
        await reopened.close()
