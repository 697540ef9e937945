"""Bulk import of stock levels from CSV at COPY speed.

Each row sets ``on_hand`` of one (sku, location), creating the row if needed. Bad input changes nothing:
the whole file is validated (in Python while streaming, duplicates in SQL) before any shard applies a
row. Rows that would drop below ``reserved`` are rejected one by one and the rest apply. With
``check_catalog`` a row whose SKU is not in the catalog is bad input too: each shard streams its staged
SKUs, distinct and sorted, to the core database in batches (one query per batch, not per row).

Per shard there is one transaction: rows stream into a temporary table with binary COPY, the existing
target rows are locked in key order (the store's global lock order), then one upsert and one ledger
insert apply them. Shards load concurrently and commit together, but they are separate servers: if one
fails during the final commit the others stay applied, and re-running the file finishes the job.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction
from sqlalchemy.types import Text

from invsaga.domain.errors import InvalidInput, UnknownProduct, VersionConflict
from invsaga.domain.keys import import_key
from invsaga.store.catalog import CHECK_BATCH, missing_products
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.ledger import key_sql, record_movements
from invsaga.store.stock_csv import MAX_REPORTED_PROBLEMS, CsvRows, RejectedRow, RowProblem, StagedRow

CHUNK_ROWS = 50_000
#: How often to re-lock when rows the import meant to create were created concurrently by someone else.
LOST_RACE_ATTEMPTS = 5


class ImportResult(BaseModel):
    batch_id: str
    rows_read: int
    applied: int
    unchanged: int
    rejected: list[RejectedRow]
    seconds: float


T = TypeVar("T")
ProgressCallback = Callable[[int], None]


# --- SQL, per shard ---------------------------------------------------------------------------

STAGING_TABLE = "stock_import_rows"
_STAGING_COLUMNS = ["line", "sku", "location", "quantity", "slot"]

_CREATE_STAGING = text(
    f"CREATE TEMPORARY TABLE {STAGING_TABLE} ("
    " line bigint NOT NULL, sku text NOT NULL, location text NOT NULL, quantity bigint NOT NULL,"
    " slot integer NOT NULL"
    ") ON COMMIT DROP"
)

# Sorting and hashing a few hundred thousand keys should not spill to disk.
_SESSION_TUNING = text("SET LOCAL work_mem = '64MB'")

_DISTINCT_SKUS = text(f"SELECT DISTINCT sku FROM {STAGING_TABLE} ORDER BY sku")

_LINES_OF = text(
    f"SELECT line, sku FROM {STAGING_TABLE} WHERE sku = ANY (:skus) ORDER BY line LIMIT :limit"
).bindparams(bindparam("skus", type_=ARRAY(Text)))

_COUNT_LINES_OF = text(f"SELECT count(*) FROM {STAGING_TABLE} WHERE sku = ANY (:skus)").bindparams(
    bindparam("skus", type_=ARRAY(Text))
)

_DUPLICATES = text(
    f"SELECT sku, location, array_agg(line ORDER BY line) AS lines FROM {STAGING_TABLE}"
    " GROUP BY sku, location HAVING count(*) > 1 ORDER BY min(line) LIMIT :limit"
)

# Locks every existing target row in key order and reports those the import would drop below reserved.
# MATERIALIZED is load-bearing: it keeps the filter from being pushed below the lock, which would then
# lock only the rejected rows.
_LOCK_AND_FIND_BELOW_RESERVED = text(
    "WITH locked AS MATERIALIZED ("
    "  SELECT i.line, s.sku, s.location, i.quantity, s.reserved"
    f"   FROM stock_levels s JOIN {STAGING_TABLE} i ON i.sku = s.sku AND i.location = s.location"
    "   ORDER BY s.sku, s.location FOR UPDATE OF s"
    ") SELECT line, sku, location, quantity, reserved FROM locked WHERE quantity < reserved ORDER BY line"
)

_IMPORT_MOVEMENTS = record_movements(
    "import",
    rows="incoming",
    delta_on_hand="quantity - coalesce(old_on_hand, 0)",
    delta_reserved="0",
    reference=":batch",
    key=key_sql(import_key, ":batch", "sku", "location"),
    then="ORDER BY sku, location",
)

# The inserted version is the version the row should end at, so the conflict branch is a compare-and-set
# against the version planned from: a row the plan saw as missing (version 0) but that someone created
# meanwhile is left alone, and shows up as planned > applied. The ledger is written from the plan: the
# attempt is rolled back unless every planned row applied, so the two always agree.
_APPLY = text(
    f"""
    WITH incoming AS (
        SELECT i.sku, i.location, i.quantity, i.slot, s.on_hand AS old_on_hand, s.version AS old_version
          FROM {STAGING_TABLE} i
          LEFT JOIN stock_levels s ON s.sku = i.sku AND s.location = i.location
         WHERE s.sku IS NULL OR (s.on_hand <> i.quantity AND s.reserved <= i.quantity)
    ), applied AS (
        INSERT INTO stock_levels AS s (sku, location, on_hand, reserved, version, slot)
        SELECT sku, location, quantity, 0, coalesce(old_version, 0) + 1, slot
          FROM incoming ORDER BY sku, location
        ON CONFLICT (sku, location) DO UPDATE
           SET on_hand = excluded.on_hand, version = excluded.version, updated_at = now()
         WHERE s.version = excluded.version - 1
        RETURNING 1
    ), ledger AS ({_IMPORT_MOVEMENTS})
    SELECT (SELECT count(*) FROM incoming) AS planned, (SELECT count(*) FROM applied) AS applied
    """
)


def _below_reserved(quantity: int, reserved: int) -> str:
    return f"quantity {quantity} is below the {reserved} units already reserved"


class _LostRace(Exception):
    """A row planned as new was created by another transaction before the insert reached it."""


@dataclass
class _ShardLoad:
    """One shard's side of an import: its connection, open transaction and staged rows."""

    index: int
    conn: AsyncConnection
    transaction: AsyncTransaction
    driver: Any  # the asyncpg connection under ``conn``, for binary COPY
    rows: int = 0
    applied: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: AsyncExitStack, index: int, engine: AsyncEngine) -> _ShardLoad:
        async with unavailable_as(shard_label(index)):
            conn = await stack.enter_async_context(engine.connect())
            transaction = await conn.begin()
            # A statement through SQLAlchemy first, so the asyncpg transaction has begun before COPY.
            await conn.execute(_SESSION_TUNING)
            await conn.execute(_CREATE_STAGING)
            raw = await conn.get_raw_connection()
        return cls(index, conn, transaction, raw.driver_connection)

    @property
    def unchanged(self) -> int:
        return self.rows - self.applied - len(self.rejected)

    async def copy(self, records: list[StagedRow]) -> None:
        async with unavailable_as(shard_label(self.index)):
            await self.driver.copy_records_to_table(STAGING_TABLE, records=records, columns=_STAGING_COLUMNS)
        self.rows += len(records)

    async def duplicates(self) -> list[RowProblem]:
        if not self.rows:
            return []
        async with unavailable_as(shard_label(self.index)):
            await self.conn.execute(text(f"ANALYZE {STAGING_TABLE}"))  # temp tables are never auto-analyzed
            groups = (await self.conn.execute(_DUPLICATES, {"limit": MAX_REPORTED_PROBLEMS})).all()
        return [
            RowProblem(
                line=line, reason=f"duplicate of line {g.lines[0]} for sku {g.sku!r} at {g.location!r}"
            )
            for g in groups
            for line in g.lines[1:]
        ]

    async def unknown_products(self, core: AsyncEngine) -> tuple[list[RowProblem], int]:
        """Lines whose SKU is not in the catalog (up to the report's limit) and how many there are.

        The staged SKUs stream out distinct and sorted, and are checked against the core a batch at a
        time, so a file of millions of rows costs a few queries, not one per row.
        """
        if not self.rows:
            return [], 0
        missing: list[str] = []
        async with unavailable_as(shard_label(self.index)):
            skus = await self.conn.stream_scalars(_DISTINCT_SKUS)
            async for batch in skus.partitions(CHECK_BATCH):
                missing += await missing_products(core, list(batch))
            if not missing:
                return [], 0
            params = {"skus": missing, "limit": MAX_REPORTED_PROBLEMS}
            rows = (await self.conn.execute(_LINES_OF, params)).all()
            total = int(await self.conn.scalar(_COUNT_LINES_OF, {"skus": missing}) or 0)
        problems = [RowProblem(line=r.line, reason=f"sku {r.sku!r} is not in the catalog") for r in rows]
        return problems, total

    async def apply(self, batch_id: str) -> None:
        """Lock, upsert and write the ledger, retrying when a row planned as new was created meanwhile."""
        if not self.rows:
            return
        async with unavailable_as(shard_label(self.index)):
            for _attempt in range(LOST_RACE_ATTEMPTS):
                try:
                    async with self.conn.begin_nested():  # rolling back releases this attempt's locks
                        below = (await self.conn.execute(_LOCK_AND_FIND_BELOW_RESERVED)).all()
                        planned, applied = (await self.conn.execute(_APPLY, {"batch": batch_id})).one()
                        if applied != planned:
                            raise _LostRace
                except _LostRace:
                    continue
                self.applied = applied
                self.rejected = [
                    RejectedRow(**row._mapping, reason=_below_reserved(row.quantity, row.reserved))
                    for row in below
                ]
                return
        raise VersionConflict(
            f"shard {self.index}: stock rows kept appearing during the import; nothing changed, try again",
            shard=self.index,
        )

    async def commit(self) -> None:
        async with unavailable_as(shard_label(self.index)):
            await self.transaction.commit()


async def _on_every_shard(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Like ``gather``, but lets every shard finish before raising, so no connection is left mid-command."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


def _refusal(problems: list[RowProblem], total: int) -> InvalidInput:
    shown = "; ".join(f"line {p.line}: {p.reason}" for p in problems[:5])
    more = f" (and {total - 5} more)" if total > 5 else ""
    return InvalidInput(
        f"import refused, nothing was changed: {total} malformed row(s): {shown}{more}",
        problems=[p.model_dump() for p in problems],
        problem_count=total,
    )


def _unknown_refusal(problems: list[RowProblem], total: int) -> UnknownProduct:
    shown = "; ".join(f"line {p.line}: {p.reason}" for p in problems[:5])
    more = f" (and {total - 5} more)" if total > 5 else ""
    return UnknownProduct(
        f"import refused, nothing was changed: {total} row(s) for skus not in the catalog: {shown}{more}; "
        "add the products first, or allow unknown products",
        problems=[p.model_dump() for p in problems],
        problem_count=total,
    )


def _open_csv(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", path=str(path)) from None


async def import_stock(
    databases: Databases,
    source: Path | Iterable[str | bytes],
    *,
    on_progress: ProgressCallback | None = None,
    chunk_rows: int = CHUNK_ROWS,
    check_catalog: bool = False,
) -> ImportResult:
    """Set stock levels from CSV (``sku,location,quantity``) on every shard; see the module docstring.

    ``source`` is a path or an iterable of lines, as text or UTF-8 bytes. ``on_progress``
    is called with the number of data rows read so far after each chunk. With ``check_catalog`` every
    row whose SKU is not in the catalog is refused by line (``UnknownProduct``) and nothing applies.
    """
    started = time.perf_counter()
    batch_id = uuid.uuid4().hex
    async with AsyncExitStack() as stack:
        lines = stack.enter_context(_open_csv(source)) if isinstance(source, Path) else source
        # A shard that a slot move changes under the import refuses its writes (SlotMoving) before
        # anything commits: the import is refused whole, and a retry routes with the new map.
        router = databases.router
        by_index = {i: await _ShardLoad.open(stack, i, databases.shards[i]) for i in databases.serving()}
        loads = list(by_index.values())
        rows = CsvRows(lines, router)
        while (batches := rows.next_chunk(chunk_rows)) is not None:
            await _on_every_shard(by_index[s].copy(batch) for s, batch in enumerate(batches) if batch)
            if on_progress is not None:
                on_progress(rows.rows_read)
        duplicates = await _on_every_shard(load.duplicates() for load in loads)
        for found in duplicates:
            for problem in found:
                rows.problem(problem.line, problem.reason)
        unknown: list[RowProblem] = []
        unknown_count = 0
        if check_catalog:
            core = databases.core_autocommit
            for found_unknown, count in await _on_every_shard(load.unknown_products(core) for load in loads):
                unknown += found_unknown
                unknown_count += count
            unknown.sort(key=lambda p: p.line)
        if rows.problem_count:
            for problem in unknown:
                rows.problem(problem.line, problem.reason)
            rows.problem_count += unknown_count - len(unknown)
            raise _refusal(sorted(rows.problems, key=lambda p: p.line), rows.problem_count)
        if unknown_count:
            raise _unknown_refusal(unknown[:MAX_REPORTED_PROBLEMS], unknown_count)
        await _on_every_shard(load.apply(batch_id) for load in loads)
        await _on_every_shard(load.commit() for load in loads)
    return ImportResult(
        batch_id=batch_id,
        rows_read=rows.rows_read,
        applied=sum(load.applied for load in loads),
        unchanged=sum(load.unchanged for load in loads),
        rejected=sorted((r for load in loads for r in load.rejected), key=lambda r: r.line),
        seconds=round(time.perf_counter() - started, 3),
    )
