"""Bulk import of the product catalog from CSV (``sku,name,price,currency,active``), all or nothing.

Every row is validated by the domain's product rules while streaming, and staged with binary COPY into a
temporary table of the core database; duplicates are found in SQL. One bad row refuses the whole file,
listing every bad line, and changes nothing. Otherwise one upsert applies the file in SKU order, in the
same transaction: a product whose values are already those of its row is left alone (its version too),
so importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from invsaga.domain.catalog import DEFAULT_CURRENCY, ProductFields
from invsaga.domain.errors import InvalidInput
from invsaga.store.databases import unavailable_as
from invsaga.store.stock_csv import MAX_REPORTED_PROBLEMS, SKU_RULE, ProblemCollector, RowProblem

HEADER = ["sku", "name", "price", "currency", "active"]
CHUNK_ROWS = 20_000
_TRUE = {"", "true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}

STAGING_TABLE = "catalog_import_rows"
_STAGING_COLUMNS = ["line", "sku", "name", "price", "currency", "active"]
StagedProduct = tuple[int, str, str, Any, str, bool]

_CREATE_STAGING = text(
    f"CREATE TEMPORARY TABLE {STAGING_TABLE} (line bigint NOT NULL, sku text NOT NULL, name text NOT NULL,"
    " price numeric(12,2) NOT NULL, currency text NOT NULL, active boolean NOT NULL) ON COMMIT DROP"
)

_DUPLICATES = text(
    f"SELECT sku, array_agg(line ORDER BY line) AS lines FROM {STAGING_TABLE}"
    " GROUP BY sku HAVING count(*) > 1 ORDER BY min(line) LIMIT :limit"
)

# SKU order is the catalog's lock order, so two imports (or an import and a PUT) cannot deadlock.
# xmax = 0 tells an inserted row from an updated one.
_APPLY = text(
    f"""
    WITH applied AS (
        INSERT INTO products AS p (sku, name, price, currency, active, version)
        SELECT sku, name, price, currency, active, 1 FROM {STAGING_TABLE} ORDER BY sku
        ON CONFLICT (sku) DO UPDATE
           SET name = excluded.name, price = excluded.price, currency = excluded.currency,
               active = excluded.active, version = p.version + 1, updated_at = now()
         WHERE (p.name, p.price, p.currency, p.active)
               IS DISTINCT FROM (excluded.name, excluded.price, excluded.currency, excluded.active)
        RETURNING (xmax = 0) AS created
    )
    SELECT count(*) AS applied, count(*) FILTER (WHERE created) AS created FROM applied
    """
)


class CatalogImportResult(BaseModel):
    rows_read: int
    #: Rows that created or changed a product (the same name as the stock import's report).
    applied: int
    #: Of ``applied``, the products that did not exist before.
    created: int
    #: Rows already exactly as the catalog has them.
    unchanged: int
    seconds: float


class _Rows(ProblemCollector):
    """Reads and validates the catalog CSV chunk by chunk."""

    def chunks(self, size: int) -> Iterator[list[StagedProduct]]:
        chunk: list[StagedProduct] = []
        reader = self._reader
        try:
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                if not self._header_seen:
                    self._check_header(line, row)
                    continue
                self.rows_read += 1
                staged = self._validate(line, row)
                if staged is not None:
                    chunk.append(staged)
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        except csv.Error as exc:
            self.rows_read += 1
            self.problem(reader.line_num, f"unreadable CSV: {exc}")
        if not self._header_seen:
            self._check_header(1, [])
        if chunk:
            yield chunk

    def _check_header(self, line: int, row: list[str]) -> None:
        self._header_seen = True
        cells = [cell.strip().lower().removeprefix("\ufeff") for cell in row]
        if cells != HEADER:
            self.problem(line, f"expected the header {','.join(HEADER)}, got {','.join(row) or 'nothing'}")

    def _validate(self, line: int, row: list[str]) -> StagedProduct | None:
        if len(row) != len(HEADER):
            self.problem(line, f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(row)}")
            return None
        sku, name, price, currency, active = row
        if not SKU_RULE.accepts(sku):
            self.problem(line, SKU_RULE.explain(sku))
            return None
        flag = active.strip().lower()
        if flag not in _TRUE and flag not in _FALSE:
            self.problem(line, f"active must be true or false, got {active!r}")
            return None
        try:
            product = ProductFields(
                sku=sku,
                name=name,
                price=price.strip(),
                currency=currency.strip() or DEFAULT_CURRENCY,
                active=flag in _TRUE,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            self.problem(line, f"invalid {field} {error.get('input')!r}: {error['msg']}")
            return None
        return (line, product.sku, product.name, product.price, product.currency, product.active)


def _open_csv(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", path=str(path)) from None


def _refusal(problems: list[RowProblem], total: int) -> InvalidInput:
    shown = "; ".join(f"line {p.line}: {p.reason}" for p in problems[:5])
    more = f" (and {total - 5} more)" if total > 5 else ""
    return InvalidInput(
        f"catalog import refused, nothing was changed: {total} bad row(s): {shown}{more}",
        problems=[p.model_dump() for p in problems],
        problem_count=total,
    )


async def import_catalog(
    core: AsyncEngine,
    source: Path | Iterable[str | bytes],
    *,
    on_progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> CatalogImportResult:
    """Create or update products from CSV in one transaction of the core database; see the module
    docstring. ``on_progress`` is called with the data rows read so far after each chunk."""
    started = time.perf_counter()
    with ExitStack() as stack:
        rows = _Rows(stack.enter_context(_open_csv(source)) if isinstance(source, Path) else source)
        async with unavailable_as("core database"), core.connect() as conn, conn.begin():
            await conn.execute(_CREATE_STAGING)
            driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg, for COPY
            for chunk in rows.chunks(chunk_rows):
                await driver.copy_records_to_table(STAGING_TABLE, records=chunk, columns=_STAGING_COLUMNS)
                if on_progress is not None:
                    on_progress(rows.rows_read)
            if on_progress is not None:
                on_progress(rows.rows_read)
            await conn.execute(text(f"ANALYZE {STAGING_TABLE}"))
            for group in (await conn.execute(_DUPLICATES, {"limit": MAX_REPORTED_PROBLEMS})).all():
                for line in group.lines[1:]:
                    rows.problem(line, f"duplicate of line {group.lines[0]} for sku {group.sku!r}")
            if rows.problem_count:
                raise _refusal(sorted(rows.problems, key=lambda p: p.line), rows.problem_count)
            applied, created = (await conn.execute(_APPLY)).one()
    return CatalogImportResult(
        rows_read=rows.rows_read,
        applied=applied,
        created=created,
        unchanged=rows.rows_read - applied,
        seconds=round(time.perf_counter() - started, 3),
    )
