"""Numbered SQL migrations for the inventory shards and the core database.

Every shard carries the same schema. A migration is a file ``schema/<kind>_<NNN>.sql`` applied in one
transaction under an advisory lock, so concurrent migrators and re-runs are safe. A database whose
schema is newer than this code is refused rather than touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.domain.errors import SchemaMismatch

Kind = Literal["shard", "core"]

_MIGRATION_LOCK = 0x1A5A6A  # pg_advisory_xact_lock key, the same on every database we own
_FILE = re.compile(r"^(shard|core)_(\d{3})\.sql$")


@dataclass(frozen=True)
class Migration:
    kind: Kind
    version: int
    sql: str


def migrations_for(kind: Kind) -> list[Migration]:
    found = []
    for entry in resources.files("invsaga.store.schema").iterdir():
        match = _FILE.match(entry.name)
        if match and match.group(1) == kind:
            found.append(Migration(kind, int(match.group(2)), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{kind} migrations are not numbered 1..N without gaps")
    return found


def latest_version(kind: Kind) -> int:
    return len(migrations_for(kind))


@dataclass(frozen=True)
class MigrationResult:
    kind: Kind
    before: int
    after: int


async def _current_version(conn: AsyncConnection) -> int:
    await conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, kind text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )
    version = await conn.scalar(text("SELECT coalesce(max(version), 0) FROM schema_migrations"))
    return int(version or 0)


async def migrate(engine: AsyncEngine, kind: Kind, *, label: str) -> MigrationResult:
    """Bring one database up to the latest ``kind`` schema. ``label`` names it in errors."""
    migrations = migrations_for(kind)
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before = await _current_version(conn)
        if before > len(migrations):
            raise SchemaMismatch(
                f"{label} has schema version {before}, newer than this release knows "
                f"({len(migrations)}); upgrade inventory-saga before touching it",
                database=label,
                found=before,
                supported=len(migrations),
            )
        raw = await conn.get_raw_connection()
        for migration in migrations[before:]:
            # asyncpg runs a multi-statement script (and PL/pgSQL bodies) with the simple protocol.
            await raw.driver_connection.execute(migration.sql)  # type: ignore[union-attr]
            await conn.execute(
                text("INSERT INTO schema_migrations (version, kind) VALUES (:v, :k)"),
                {"v": migration.version, "k": kind},
            )
    return MigrationResult(kind, before, len(migrations))


async def check_schema(engine: AsyncEngine, kind: Kind, *, label: str) -> None:
    """Refuse to serve from a database that is not exactly at this code's schema version."""
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('schema_migrations') IS NOT NULL"))
        version = 0
        if exists:
            version = int(await conn.scalar(text("SELECT max(version) FROM schema_migrations")) or 0)
    expected = latest_version(kind)
    if version != expected:
        hint = "run `invsaga db migrate`" if version < expected else "upgrade inventory-saga"
        raise SchemaMismatch(
            f"{label} is at schema version {version}, this release needs {expected}: {hint}",
            database=label,
            found=version,
            supported=expected,
        )
