"""The outboxes as event sources: every shard's ``stock_events`` and the core's ``order_events``.

Both tables have the same life: rows are written by a trigger in the transaction of the change (id in
insert order, ``seq`` NULL), stamped with a gapless ``seq`` by the one active relay of their database,
read by ``seq``, and pruned once old and delivered. Only the columns of the event's data differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import Text

from invsaga.domain.events import (
    CORE_SOURCE,
    ORDER_EVENT_TYPES,
    STOCK_EVENT_TYPES,
    Event,
    event_id,
    shard_source,
)
from invsaga.store.databases import Databases, shard_label

_STOCK_COLUMNS = "sku, location, on_hand, reserved, available, version, reason, reference"
_ORDER_COLUMNS = "order_id, customer_id, amount, currency, reason, lines"


@dataclass(frozen=True)
class Source:
    """One outbox: its name in event ids and cursors, its database, and its tables."""

    name: str
    label: str  # names the database in errors
    engine: AsyncEngine
    table: str
    counter: str
    columns: str
    types: tuple[str, ...]
    #: The session advisory lock that makes one relay the active one for this database.
    lock_key: int

    def data(self, row: Any) -> dict[str, Any]:
        values = {name.strip(): getattr(row, name.strip()) for name in self.columns.split(",")}
        if self.table == "order_events":
            values["status"] = row.type.removeprefix("order.")
            values["amount"] = (
                str(values["amount"]) if isinstance(values["amount"], Decimal) else values["amount"]
            )
        return values

    def event(self, row: Any) -> Event:
        return Event(
            id=event_id(self.name, row.seq),
            type=row.type,
            source=self.name,
            sequence=row.seq,
            occurred_at=row.created_at,
            data=self.data(row),
        )


_SHARD_RELAY_LOCK = 0x5E1A7_0001
_CORE_RELAY_LOCK = 0x5E1A7_0002


def shard_outbox(databases: Databases, index: int) -> Source:
    """The stock events of shard ``index``."""
    return Source(
        shard_source(index),
        shard_label(index),
        databases.shards[index],
        "stock_events",
        "stock_event_counter",
        _STOCK_COLUMNS,
        STOCK_EVENT_TYPES,
        _SHARD_RELAY_LOCK,
    )


def sources_of(databases: Databases) -> list[Source]:
    """Every source as ``databases`` knows them now, serving shards first by index, then the core.

    Read it again to follow the registry: a shard registered since is here once ``databases`` has
    refreshed, and a removed one is not (it holds no data, and its server may be gone)."""
    shards = [shard_outbox(databases, index) for index in databases.serving()]
    core = Source(
        CORE_SOURCE,
        "core database",
        databases.core,
        "order_events",
        "order_event_counter",
        _ORDER_COLUMNS,
        ORDER_EVENT_TYPES,
        _CORE_RELAY_LOCK,
    )
    return [*shards, core]


async def stamp(conn: AsyncConnection, source: Source, *, batch: int) -> int:
    """Give the oldest unstamped rows the next seqs, in id order, and commit; how many were stamped.

    Only committed rows are visible here, and per stock row id order is commit order, so a reader that
    goes by seq sees each row's events in order and never a seq lower than one it already saw. The
    counter row's lock serializes stampers even if two relays ever ran at once.
    """
    result = await conn.execute(
        text(
            f"""
            WITH picked AS (
                SELECT id, row_number() OVER (ORDER BY id) AS n
                  FROM (SELECT id FROM {source.table} WHERE seq IS NULL ORDER BY id LIMIT :batch) p
            ), bumped AS (
                UPDATE {source.counter} SET last_seq = last_seq + (SELECT count(*) FROM picked)
                 WHERE EXISTS (SELECT 1 FROM picked)
                RETURNING last_seq - (SELECT count(*) FROM picked) AS base
            )
            UPDATE {source.table} e SET seq = bumped.base + picked.n
              FROM picked, bumped WHERE e.id = picked.id
            """
        ),
        {"batch": batch},
    )
    await conn.commit()
    return int(result.rowcount or 0)


async def high_water(conn: AsyncConnection, source: Source) -> int:
    """The last seq stamped: every seq up to it is readable now."""
    return int(await conn.scalar(text(f"SELECT last_seq FROM {source.counter}")) or 0)


async def unstamped(conn: AsyncConnection, source: Source) -> int:
    return int(await conn.scalar(text(f"SELECT count(*) FROM {source.table} WHERE seq IS NULL")) or 0)


async def read_after(
    conn: AsyncConnection,
    source: Source,
    after: int,
    *,
    limit: int,
    types: Sequence[str] | None = None,
    since: datetime | None = None,
) -> list[Event]:
    """Up to ``limit`` stamped events past ``after``, in seq order, of ``types`` if given, and that
    occurred at or after ``since`` if given."""
    wanted = "" if types is None else " AND type = ANY (:types)"
    if since is not None:
        wanted += " AND created_at >= :since"
    statement = text(
        f"SELECT seq, type, created_at, {source.columns} FROM {source.table}"
        f" WHERE seq > :after{wanted} ORDER BY seq LIMIT :limit"
    )
    params: dict[str, Any] = {"after": after, "limit": limit}
    if since is not None:
        params["since"] = since
    if types is not None:
        statement = statement.bindparams(bindparam("types", type_=ARRAY(Text)))
        params["types"] = list(types)
    return [source.event(row) for row in await conn.execute(statement, params)]


async def undelivered(
    conn: AsyncConnection, source: Source, *, after: int, types: Sequence[str], since: datetime
) -> int:
    """How many events of ``types`` that occurred at or after ``since`` a webhook whose cursor is at
    ``after`` has yet to get: the stamped ones past it, and every one not stamped yet."""
    statement = text(
        f"SELECT count(*) FROM {source.table}"
        " WHERE (seq IS NULL OR seq > :after) AND type = ANY (:types) AND created_at >= :since"
    ).bindparams(bindparam("types", type_=ARRAY(Text)))
    return int(await conn.scalar(statement, {"after": after, "types": list(types), "since": since}) or 0)


async def last_seq_before(conn: AsyncConnection, source: Source, moment: datetime) -> int:
    """The last stamped seq of an event that occurred before ``moment`` (0 if none is kept)."""
    found = await conn.scalar(
        text(
            f"SELECT seq FROM {source.table} WHERE seq IS NOT NULL AND created_at < :moment"
            " ORDER BY seq DESC LIMIT 1"
        ),
        {"moment": moment},
    )
    return int(found or 0)


async def prune(
    conn: AsyncConnection,
    source: Source,
    *,
    through_seq: int,
    older_than_seconds: float,
    before: datetime | None = None,
    batch: int = 10_000,
) -> int:
    """Delete up to ``batch`` stamped rows at or below ``through_seq`` that are older than the retention
    (and than ``before``, when given)."""
    result = await conn.execute(
        text(
            f"""
            DELETE FROM {source.table} WHERE id IN (
                SELECT id FROM {source.table}
                 WHERE seq <= :through AND created_at < now() - make_interval(secs => :age)
                   AND created_at < coalesce(CAST(:before AS timestamptz), 'infinity')
                 ORDER BY seq LIMIT :batch)
            """
        ),
        {"through": through_seq, "age": older_than_seconds, "before": before, "batch": batch},
    )
    await conn.commit()
    return int(result.rowcount or 0)
