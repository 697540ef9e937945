"""Check invariants 1-4 of ARCHITECTURE.md on every shard, each shard in one consistent snapshot.

The audit is read-only and safe against live shards: a REPEATABLE READ transaction means a checkout
committing mid-audit cannot make a clean shard look broken.

It also reports stock rows whose SKU has no product in the catalog. That is a finding, not a violation:
an operator may let such stock in on purpose (``--allow-unknown-product``), and a checkout refuses the
SKU anyway. To stay cheap at millions of rows, each shard streams its distinct SKUs off the primary key
in batches and checks each batch against the core database in one query.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import Text

from invsaga.store.catalog import CHECK_BATCH, missing_products
from invsaga.store.databases import Databases, shard_label, unavailable_as
from invsaga.store.slot_ownership import OWNED_HOLDS, OWNED_LEDGER, OWNED_STOCK

#: How many SKUs without a product the report names; the counts are always exact.
SAMPLE_SKUS = 20

_DISTINCT_SKUS = text(f"SELECT DISTINCT sku FROM {OWNED_STOCK} s ORDER BY sku")
_ROWS_OF = text(f"SELECT count(*) FROM {OWNED_STOCK} s WHERE sku = ANY (:skus)").bindparams(
    bindparam("skus", type_=ARRAY(Text))
)

# Each check returns the offending (sku, location) rows with the numbers that disagree.
_CHECKS: list[tuple[int, str, str]] = [
    (
        1,
        "reserved must lie within 0..on_hand",
        f"SELECT sku, location, on_hand, reserved FROM {OWNED_STOCK} s"
        " WHERE NOT (0 <= reserved AND reserved <= on_hand)",
    ),
    (
        2,
        "reserved must equal the sum of held reservations",
        f"""
        SELECT sku, location, coalesce(s.reserved, 0) AS reserved, coalesce(h.held, 0) AS held
          FROM {OWNED_STOCK} s
          FULL JOIN (SELECT sku, location, sum(quantity) AS held FROM {OWNED_HOLDS} r
                      WHERE state = 'held' GROUP BY sku, location) h USING (sku, location)
         WHERE coalesce(s.reserved, 0) <> coalesce(h.held, 0)
        """,
    ),
    (
        3,
        "on_hand and reserved must equal the sums of their ledger deltas",
        f"""
        SELECT sku, location, coalesce(s.on_hand, 0) AS on_hand, coalesce(s.reserved, 0) AS reserved,
               coalesce(m.on_hand_sum, 0) AS ledger_on_hand, coalesce(m.reserved_sum, 0) AS ledger_reserved
          FROM {OWNED_STOCK} s
          FULL JOIN (SELECT sku, location, sum(delta_on_hand) AS on_hand_sum,
                            sum(delta_reserved) AS reserved_sum
                       FROM {OWNED_LEDGER} l GROUP BY sku, location) m USING (sku, location)
         WHERE coalesce(s.on_hand, 0) <> coalesce(m.on_hand_sum, 0)
            OR coalesce(s.reserved, 0) <> coalesce(m.reserved_sum, 0)
        """,
    ),
    (
        4,
        "stock must be conserved: received and adjusted = on_hand + sold, and holds never move on_hand",
        f"""
        SELECT sku, location, coalesce(s.on_hand, 0) AS on_hand, m.brought_in, m.sold, m.moved_by_holds
          FROM {OWNED_STOCK} s
          FULL JOIN (SELECT sku, location,
                            sum(delta_on_hand) FILTER (WHERE reason IN ('receive', 'adjust', 'import'))
                                AS brought_in,
                            -sum(delta_on_hand) FILTER (WHERE reason = 'commit') AS sold,
                            sum(abs(delta_on_hand))
                                FILTER (WHERE reason IN ('reserve', 'release', 'expire')) AS moved_by_holds
                       FROM {OWNED_LEDGER} l GROUP BY sku, location) m USING (sku, location)
         WHERE coalesce(m.brought_in, 0) <> coalesce(s.on_hand, 0) + coalesce(m.sold, 0)
            OR coalesce(m.moved_by_holds, 0) <> 0
        """,
    ),
]


class Violation(BaseModel):
    invariant: int
    rule: str
    shard: int
    sku: str
    location: str
    numbers: dict[str, int]


class ShardSummary(BaseModel):
    shard: int
    stock_rows: int
    held_reservations: int
    units_on_hand: int
    units_reserved: int


class UnknownProducts(BaseModel):
    """Stock rows whose SKU is not in the catalog: reported, never a violation."""

    stock_rows: int = 0
    skus: int = 0
    #: Up to ``SAMPLE_SKUS`` of them, in SKU order per shard.
    sample: list[str] = []


class AuditReport(BaseModel):
    shards: list[ShardSummary]
    violations: list[Violation]
    unknown_products: UnknownProducts = Field(default_factory=UnknownProducts)

    @property
    def clean(self) -> bool:
        return not self.violations


async def _audit_shard(
    index: int, engine: AsyncEngine, core: AsyncEngine
) -> tuple[ShardSummary, list[Violation], UnknownProducts]:
    async with unavailable_as(shard_label(index)), engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            summary = await _summary(conn, index)
            violations: list[Violation] = []
            for invariant, rule, sql in _CHECKS:
                for row in (await conn.execute(text(sql))).mappings():
                    violations.append(_violation(invariant, rule, index, row))
            unknown = await _unknown_products(conn, core)
    return summary, violations, unknown


async def _unknown_products(conn: AsyncConnection, core: AsyncEngine) -> UnknownProducts:
    found = UnknownProducts()
    skus = await conn.stream_scalars(_DISTINCT_SKUS)
    async for batch in skus.partitions(CHECK_BATCH):
        missing = await missing_products(core, list(batch))
        if missing:
            found.skus += len(missing)
            found.stock_rows += int(await conn.scalar(_ROWS_OF, {"skus": missing}) or 0)
            found.sample += missing[: SAMPLE_SKUS - len(found.sample)]
    return found


async def _summary(conn: AsyncConnection, index: int) -> ShardSummary:
    row = (
        await conn.execute(
            text(
                "SELECT count(*) AS n, coalesce(sum(on_hand), 0) AS on_hand,"
                " coalesce(sum(reserved), 0) AS reserved,"
                f" (SELECT count(*) FROM {OWNED_HOLDS} r WHERE state = 'held') AS held"
                f" FROM {OWNED_STOCK} s"
            )
        )
    ).one()
    return ShardSummary(
        shard=index,
        stock_rows=row.n,
        held_reservations=row.held,
        units_on_hand=row.on_hand,
        units_reserved=row.reserved,
    )


def _violation(invariant: int, rule: str, shard: int, row: Any) -> Violation:
    numbers = {k: int(v or 0) for k, v in row.items() if k not in ("sku", "location")}
    return Violation(
        invariant=invariant, rule=rule, shard=shard, sku=row["sku"], location=row["location"], numbers=numbers
    )


async def audit(databases: Databases) -> AuditReport:
    core = databases.core_autocommit
    results = await asyncio.gather(*(_audit_shard(i, databases.shards[i], core) for i in databases.serving()))
    unknown = [found for _, _, found in results]
    return AuditReport(
        shards=[summary for summary, _, _ in results],
        violations=[v for _, found, _ in results for v in found],
        unknown_products=UnknownProducts(
            stock_rows=sum(u.stock_rows for u in unknown),
            skus=sum(u.skus for u in unknown),
            sample=sorted(sku for u in unknown for sku in u.sample)[:SAMPLE_SKUS],
        ),
    )
