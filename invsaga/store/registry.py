"""The shard registry: which shards exist, where each one is, and whether it takes slots.

It lives in the core database (``shards``, core_006) and replaces the deploy-time list as the source
of truth; a deployment that never registers a shard keeps working from ``INVSAGA_SHARD_DSNS``, which
``invsaga db migrate`` registers by reference. A registered DSN may be a reference to the process'
environment (``env:NAME``), so a password need not be stored in the database, and each process (a
container with its own host names) resolves it itself.

Every change here bumps the routing epoch and notifies ``invsaga_routing`` in its transaction, so
every process reloads (``invsaga.store.routing_watch``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invsaga.domain.errors import ConfigurationError, InvalidInput
from invsaga.settings import Settings, to_asyncpg_url

ShardState = Literal["active", "draining", "removed"]
#: Processes LISTEN here for registry and slot-map changes; the payload is the new epoch.
CHANNEL = "invsaga_routing"

_ENV_REF = "env:"
_LISTED = re.compile(r"INVSAGA_SHARD_DSNS\[(\d+)\]")


@dataclass(frozen=True)
class ShardEntry:
    index: int
    dsn: str
    state: ShardState

    @property
    def takes_slots(self) -> bool:
        """Only an active shard is given slots; a draining one gives its slots away."""
        return self.state == "active"

    @property
    def shown_dsn(self) -> str:
        """The DSN as it may be printed: a reference as it is, a URL without its password."""
        if self.dsn.startswith(_ENV_REF):
            return self.dsn
        return to_asyncpg_url(self.dsn).set(drivername="postgresql").render_as_string(hide_password=True)


def listed_reference(position: int) -> str:
    """The reference to the ``position``-th entry of INVSAGA_SHARD_DSNS."""
    return f"{_ENV_REF}INVSAGA_SHARD_DSNS[{position}]"


def check_dsn(dsn: str) -> str:
    """``dsn`` if it is a Postgres URL or an environment reference, else InvalidInput saying why."""
    if dsn.startswith(_ENV_REF):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dsn[len(_ENV_REF) :]) and not _LISTED.fullmatch(
            dsn[len(_ENV_REF) :]
        ):
            raise InvalidInput(f"{dsn!r} is not env:NAME (an environment variable holding the DSN)")
        return dsn
    try:
        to_asyncpg_url(dsn)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return dsn


def resolve_dsn(dsn: str, settings: Settings) -> URL:
    """The URL a registered DSN names, in this process' environment."""
    if not dsn.startswith(_ENV_REF):
        return to_asyncpg_url(dsn)
    name = dsn[len(_ENV_REF) :]
    listed = _LISTED.fullmatch(name)
    if listed:
        position = int(listed.group(1))
        if position >= len(settings.shard_dsns):
            raise ConfigurationError(
                f"shard DSN {dsn} names entry {position} of INVSAGA_SHARD_DSNS, which has "
                f"{len(settings.shard_dsns)}"
            )
        return settings.shard_urls[position]
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"shard DSN {dsn}: the environment variable {name} is not set")
    try:
        return to_asyncpg_url(value)
    except ValueError as exc:
        raise ConfigurationError(f"shard DSN {dsn}: {exc}") from None


_READ = text("SELECT shard_index, dsn, state FROM shards ORDER BY shard_index")
_BUMP = text(
    "WITH bumped AS (UPDATE routing_epoch SET epoch = epoch + 1 RETURNING epoch)"
    f" SELECT epoch, pg_notify('{CHANNEL}', epoch::text) FROM bumped"
)
# Registering takes the table's lock, so two concurrent adds cannot pick the same index.
_LOCK = text("LOCK TABLE shards IN SHARE ROW EXCLUSIVE MODE")


async def read_registry(core: AsyncEngine | AsyncConnection) -> list[ShardEntry]:
    if isinstance(core, AsyncEngine):
        async with core.connect() as conn:
            return await read_registry(conn)
    rows = (await core.execute(_READ)).all()
    return [ShardEntry(index=r.shard_index, dsn=r.dsn, state=r.state) for r in rows]


async def bump_epoch(conn: AsyncConnection) -> int:
    """Bump the routing epoch and notify every process, when ``conn``'s transaction commits."""
    return int((await conn.execute(_BUMP)).scalar_one())


async def register_listed(core: AsyncEngine, count: int) -> None:
    """Register the first ``count`` entries of INVSAGA_SHARD_DSNS as shards 0..count-1, by reference,
    where the registry has no such shard yet (``invsaga db migrate``)."""
    async with core.begin() as conn:
        await conn.execute(_LOCK)
        known = {entry.index for entry in await read_registry(conn)}
        missing = [i for i in range(count) if i not in known]
        for index in missing:
            await conn.execute(
                text("INSERT INTO shards (shard_index, dsn) VALUES (:i, :dsn)"),
                {"i": index, "dsn": listed_reference(index)},
            )
        if missing:
            await bump_epoch(conn)


async def register_shard(core: AsyncEngine, dsn: str) -> int:
    """Register a new shard (it owns no slot yet) and return its index: one past the highest ever."""
    check_dsn(dsn)
    async with core.begin() as conn:
        await conn.execute(_LOCK)
        entries = await read_registry(conn)
        index = max((e.index for e in entries), default=-1) + 1
        await conn.execute(
            text("INSERT INTO shards (shard_index, dsn) VALUES (:i, :dsn)"), {"i": index, "dsn": dsn}
        )
        await bump_epoch(conn)
    return index


async def set_shard_state(core: AsyncEngine, index: int, state: ShardState) -> None:
    async with core.begin() as conn:
        changed = await conn.execute(
            text("UPDATE shards SET state = :state, updated_at = now() WHERE shard_index = :i"),
            {"i": index, "state": state},
        )
        if not changed.rowcount:
            raise InvalidInput(f"there is no shard {index}")
        await bump_epoch(conn)
