"""Fill ``stock_levels.slot`` on rows written before the column existed (shard_006).

SQL cannot compute a SKU's slot (blake2b), so this runs in Python: ``invsaga db migrate`` calls it on
every shard, and a slot move calls it again under its fence, for any row an older process inserted
since. Batches keep each UPDATE short, so reserves on the same rows wait for one batch at most.
"""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import Integer, Text

from invsaga.store.routing import slot_of

_UNSET = text("SELECT DISTINCT sku FROM stock_levels WHERE slot IS NULL LIMIT :limit")
_SET = text(
    "UPDATE stock_levels s SET slot = u.slot FROM unnest(:skus, :slots) AS u(sku, slot)"
    " WHERE s.sku = u.sku AND s.slot IS NULL"
).bindparams(bindparam("skus", type_=ARRAY(Text)), bindparam("slots", type_=ARRAY(Integer)))


async def backfill_slots(engine: AsyncEngine, *, batch: int = 5000) -> int:
    """Set the slot of every stock row without one; returns how many SKUs were set."""
    done = 0
    while True:
        async with engine.begin() as conn:
            skus = list((await conn.execute(_UNSET, {"limit": batch})).scalars())
            if not skus:
                return done
            await conn.execute(_SET, {"skus": skus, "slots": [slot_of(sku) for sku in skus]})
        done += len(skus)
