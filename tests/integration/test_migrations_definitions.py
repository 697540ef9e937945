"""Functions and triggers as repeatable definitions: applied when new or changed, once, however many
migrators race; a shard migrated by the old layout (function text inside the numbered migrations) ends
with exactly the definitions of a fresh one; and a shard with stale definitions is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.domain.errors import SchemaMismatch
from invsaga.settings import to_asyncpg_url
from invsaga.store import migrations
from invsaga.store.databases import make_engine
from invsaga.store.migrations import Definition, check_schema, definitions_for, migrate, migrations_for

#: shard_001 and shard_002 exactly as they were before the functions moved into definitions; the
#: later migrations never held function text, so the old layout takes them from the current files.
BEFORE_DEFINITIONS = Path(__file__).parent / "schema_before_definitions"

NAMES = tuple(d.name for d in definitions_for("shard"))

_DEFINED_OBJECTS = text(
    """
    SELECT 'function ' || p.proname AS name, pg_get_functiondef(p.oid) AS definition
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'trigger ' || t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE NOT t.tgisinternal
    ORDER BY name
    """
)


@pytest.fixture
async def new_shard(pg_fleet) -> AsyncIterator[Callable[[], AsyncEngine]]:
    """Makes empty databases on a shard server, each with an engine that can serve several migrators."""
    engines: list[AsyncEngine] = []

    def make() -> AsyncEngine:
        dsn = pg_fleet.shards[0].create_database(f"defs_{uuid.uuid4().hex[:8]}")
        engines.append(make_engine(to_asyncpg_url(dsn), pool_size=4))
        return engines[-1]

    yield make
    await asyncio.gather(*(engine.dispose() for engine in engines))


async def defined_objects(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return {row.name: row.definition for row in await conn.execute(_DEFINED_OBJECTS)}


async def recorded(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT name, sha256, applied_at FROM schema_definitions"))
        return sorted(tuple(row) for row in rows)


async def migrate_the_old_way(engine: AsyncEngine, up_to: int) -> None:
    """What migrate did before definitions: run each numbered file, record its number."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, kind text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        raw = await conn.get_raw_connection()
        for migration in migrations_for("shard")[:up_to]:
            old = BEFORE_DEFINITIONS / f"shard_{migration.version:03d}.sql"
            sql = old.read_text() if old.exists() else migration.sql
            await raw.driver_connection.execute(sql)  # type: ignore[union-attr]
            await conn.execute(
                text("INSERT INTO schema_migrations (version, kind) VALUES (:v, 'shard')"),
                {"v": migration.version},
            )


async def test_a_fresh_shard_gets_every_definition_and_a_rerun_applies_none(new_shard):
    engine = new_shard()
    first = await migrate(engine, "shard", label="shard 0")
    assert first.definitions == NAMES
    objects = await defined_objects(engine)
    assert set(objects) == {
        "function guard_moving_slots",
        "trigger guard_moving_slots_hold_insert",
        "trigger guard_moving_slots_hold_update",
        "trigger guard_moving_slots_ledger_insert",
        "trigger guard_moving_slots_stock_insert",
        "trigger guard_moving_slots_stock_update",
        "function notify_stock_available",
        "function notify_stock_inserted",
        "function record_stock_events",
        "function reserve_stock",
        "function slot_served_here",
        "trigger stock_available_after_insert",
        "trigger stock_available_after_update",
        "trigger stock_events_after_movements",
    }
    assert "SET plan_cache_mode TO 'force_custom_plan'" in objects["function reserve_stock"]
    assert [(name, sha) for name, sha, _ in await recorded(engine)] == [
        (d.name, d.sha256) for d in definitions_for("shard")
    ]
    before = await recorded(engine)

    again = await migrate(engine, "shard", label="shard 0")

    assert again.definitions == ()
    assert await recorded(engine) == before, "nothing is re-applied while the hashes match"
    assert await defined_objects(engine) == objects
    await check_schema(engine, "shard", label="shard 0")


async def test_a_changed_definition_is_applied_once_however_many_migrate_at_once(new_shard, monkeypatch):
    engine = new_shard()
    await migrate(engine, "shard", label="shard 0")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE definition_runs (at timestamptz NOT NULL DEFAULT now())"))
    current = definitions_for("shard")

    def changed(kind: migrations.Kind) -> list[Definition]:
        return [
            Definition(
                d.name,
                d.sql.replace("AS $fn$\n", "AS $fn$\n-- changed\n", 1)
                + "INSERT INTO definition_runs DEFAULT VALUES;\n",
            )
            if d.name == "reserve_stock"
            else d
            for d in current
        ]

    with monkeypatch.context() as patched:
        patched.setattr(migrations, "definitions_for", changed)
        results = await asyncio.gather(*(migrate(engine, "shard", label="shard 0") for _ in range(4)))
        await check_schema(engine, "shard", label="shard 0")

    assert sorted(r.definitions for r in results) == [(), (), (), ("reserve_stock",)]
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM definition_runs")) == 1
    assert "-- changed" in (await defined_objects(engine))["function reserve_stock"]
    with pytest.raises(SchemaMismatch, match="reserve_stock"):
        await check_schema(engine, "shard", label="shard 0")


@pytest.mark.parametrize("old_version", [1, 3])
async def test_a_shard_migrated_by_the_old_layout_ends_with_the_definitions_of_a_fresh_one(
    new_shard, old_version
):
    fresh = new_shard()
    await migrate(fresh, "shard", label="fresh")
    old = new_shard()
    await migrate_the_old_way(old, old_version)
    if old_version == 3:
        # The definitions were moved as the text the old migrations added up to, to the letter.
        # Since then the stock event trigger was added and reserve_stock learned to allocate across
        # locations (issue 12): the migrate below must bring exactly those up to date.
        changed_since = {"function reserve_stock"}
        old_objects = await defined_objects(old)
        fresh_objects = await defined_objects(fresh)
        assert changed_since <= set(old_objects)
        assert {n: o for n, o in old_objects.items() if n not in changed_since} == {
            n: fresh_objects.get(n) for n in old_objects if n not in changed_since
        }
        assert all(old_objects[n] != fresh_objects[n] for n in changed_since)
    with pytest.raises(SchemaMismatch, match="run `invsaga db migrate`"):
        await check_schema(old, "shard", label="old")

    result = await migrate(old, "shard", label="old")

    assert (result.before, result.definitions) == (old_version, NAMES)
    assert await defined_objects(old) == await defined_objects(fresh)
    await check_schema(old, "shard", label="old")


async def test_a_shard_with_stale_or_missing_definitions_is_refused_until_migrated(new_shard):
    engine = new_shard()
    await migrate(engine, "shard", label="shard 0")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE schema_definitions SET sha256 = '0' WHERE name = 'reserve_stock'"))
    with pytest.raises(SchemaMismatch, match=r"reserve_stock .*run `invsaga db migrate`") as refused:
        await check_schema(engine, "shard", label="shard 0")
    assert refused.value.details["stale_definitions"] == ["reserve_stock"]
    assert (await migrate(engine, "shard", label="shard 0")).definitions == ("reserve_stock",)
    await check_schema(engine, "shard", label="shard 0")

    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE schema_definitions"))
    with pytest.raises(SchemaMismatch) as refused:
        await check_schema(engine, "shard", label="shard 0")
    assert refused.value.details["stale_definitions"] == list(NAMES)
    assert (await migrate(engine, "shard", label="shard 0")).definitions == NAMES
    await check_schema(engine, "shard", label="shard 0")
