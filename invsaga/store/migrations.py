"""Numbered SQL migrations for the tables, and repeatable definitions for the functions and triggers.

Every shard carries the same schema. A migration is a file ``schema/<kind>_<NNN>.sql``, applied once, by
number. A definition is a file ``schema/definitions/<kind>/<name>.sql`` that holds the whole current text
of one function (with its trigger, if it has one) as ``CREATE OR REPLACE``: it is applied whenever its
sha256 differs from the one recorded in ``schema_definitions``, so a function's text lives in one place
rather than in the sum of the migrations that patched it.

``migrate`` applies the pending migrations, then the changed definitions in name order, in one
transaction under an advisory lock, so concurrent migrators and re-runs are safe. Definitions run after
the migrations because a function may need its tables (an SQL-language body is checked against them
when it is created); so a migration must not rely on a function, and a definition may rely only on the
tables and on the definitions that sort before it. ``CREATE OR REPLACE`` cannot change a function's
arguments or result type, nor drop anything: those take a migration that drops the old object first.

A database whose schema is newer than this code is refused rather than touched. Definitions carry no
order of their own: migrate with the newest release, since an older one would put back its own text.
"""

from __future__ import annotations

import hashlib
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
_SCHEMA = resources.files("invsaga.store.schema")


@dataclass(frozen=True)
class Migration:
    kind: Kind
    version: int
    sql: str

    @property
    def runs_nothing(self) -> bool:
        """Only comments: a migration whose work moved into a definition. (asyncpg cannot send an empty
        script, so it is recorded without being run.)"""
        return all(not line.strip() or line.lstrip().startswith("--") for line in self.sql.splitlines())


@dataclass(frozen=True)
class Definition:
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_for(kind: Kind) -> list[Migration]:
    found = []
    for entry in _SCHEMA.iterdir():
        match = _FILE.match(entry.name)
        if match and match.group(1) == kind:
            found.append(Migration(kind, int(match.group(2)), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{kind} migrations are not numbered 1..N without gaps")
    return found


def definitions_for(kind: Kind) -> list[Definition]:
    """This release's definitions for ``kind``, in the order they are applied (by name)."""
    folder = _SCHEMA / "definitions" / kind
    if not folder.is_dir():
        return []
    found = [
        Definition(entry.name.removesuffix(".sql"), entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda d: d.name)


def latest_version(kind: Kind) -> int:
    return len(migrations_for(kind))


@dataclass(frozen=True)
class MigrationResult:
    kind: Kind
    before: int
    after: int
    #: The definitions this call (re)applied, by name: new, or changed since they were last applied.
    definitions: tuple[str, ...] = ()


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


_RECORDED_DEFINITIONS = text("SELECT name, sha256 FROM schema_definitions")

_RECORD_DEFINITION = text(
    "INSERT INTO schema_definitions (name, sha256) VALUES (:name, :sha256)"
    " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, applied_at = now()"
)


async def _recorded_definitions(conn: AsyncConnection) -> dict[str, str]:
    await conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS schema_definitions ("
            " name text PRIMARY KEY, sha256 text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )
    return {row.name: row.sha256 for row in await conn.execute(_RECORDED_DEFINITIONS)}


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
        # asyncpg runs a multi-statement script (and PL/pgSQL bodies) with the simple protocol.
        script = raw.driver_connection.execute  # type: ignore[union-attr]
        for migration in migrations[before:]:
            if not migration.runs_nothing:
                await script(migration.sql)
            await conn.execute(
                text("INSERT INTO schema_migrations (version, kind) VALUES (:v, :k)"),
                {"v": migration.version, "k": kind},
            )
        recorded = await _recorded_definitions(conn)
        applied = []
        for definition in definitions_for(kind):
            if recorded.get(definition.name) != definition.sha256:
                await script(definition.sql)
                await conn.execute(_RECORD_DEFINITION, {"name": definition.name, "sha256": definition.sha256})
                applied.append(definition.name)
    return MigrationResult(kind, before, len(migrations), tuple(applied))


async def check_schema(engine: AsyncEngine, kind: Kind, *, label: str) -> None:
    """Refuse to serve from a database that is not exactly at this code's schema version, or whose
    definitions are not exactly this code's."""
    definitions = definitions_for(kind)
    recorded: dict[str, str] = {}
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('schema_migrations') IS NOT NULL"))
        version = 0
        if exists:
            version = int(await conn.scalar(text("SELECT max(version) FROM schema_migrations")) or 0)
        if definitions and await conn.scalar(text("SELECT to_regclass('schema_definitions') IS NOT NULL")):
            recorded = {row.name: row.sha256 for row in await conn.execute(_RECORDED_DEFINITIONS)}
    expected = latest_version(kind)
    if version != expected:
        hint = "run `invsaga db migrate`" if version < expected else "upgrade inventory-saga"
        raise SchemaMismatch(
            f"{label} is at schema version {version}, this release needs {expected}: {hint}",
            database=label,
            found=version,
            supported=expected,
        )
    stale = [d.name for d in definitions if recorded.get(d.name) != d.sha256]
    if stale:
        raise SchemaMismatch(
            f"{label} has other definitions of {', '.join(stale)} than this release: "
            "run `invsaga db migrate` (or, if a newer release migrated it, upgrade inventory-saga)",
            database=label,
            found=version,
            supported=expected,
            stale_definitions=stale,
        )
