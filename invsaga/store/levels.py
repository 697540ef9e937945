"""The stock row itself: read it, receive into it, set it. Each change is one conditional, versioned
statement, idempotent by key, that writes its ledger row in the same statement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import Text

from invsaga.domain.errors import (
    BelowReserved,
    IdempotencyKeyConflict,
    InvalidInput,
    ShardUnavailable,
    UnknownSku,
    VersionConflict,
)
from invsaga.domain.keys import adjustment_key, receipt_key
from invsaga.domain.stock import StockLevel
from invsaga.store.catalog import require_products
from invsaga.store.databases import shard_label, unavailable_as
from invsaga.store.ledger import record_movements
from invsaga.store.rerouting import rerouted
from invsaga.store.routing import slot_of
from invsaga.store.sharded import ShardedStore, refuse_if_moved
from invsaga.store.stock_csv import MAX_QUANTITY

# The ledger row comes first: a replayed key inserts nothing, so the level is not touched either.
_RECEIPT_MOVEMENT = record_movements(
    "receive",
    rows="(VALUES (:sku, :location)) AS receipt (sku, location)",
    delta_on_hand=":quantity",
    delta_reserved="0",
    reference=":reference",
    key=":key",
    then="ON CONFLICT (idempotency_key) DO NOTHING RETURNING sku, location, delta_on_hand",
)

_RECEIVE = text(
    f"""
    WITH movement AS ({_RECEIPT_MOVEMENT})
    INSERT INTO stock_levels AS s (sku, location, on_hand, reserved, version, slot)
    SELECT sku, location, delta_on_hand, 0, 1, :slot FROM movement
    ON CONFLICT (sku, location) DO UPDATE
       SET on_hand = s.on_hand + excluded.on_hand, version = s.version + 1, updated_at = now()
    RETURNING s.sku, s.location, s.on_hand, s.reserved, s.version
    """
)

# A replayed receipt: what its key received first (the key names its sku and location), and the level.
_RECEIVED = text(
    "SELECT m.delta_on_hand AS received, s.sku, s.location, s.on_hand, s.reserved, s.version"
    " FROM stock_movements m JOIN stock_levels s ON s.sku = m.sku AND s.location = m.location"
    " WHERE m.idempotency_key = :key"
)

#: Postgres' numeric_value_out_of_range: on_hand would pass bigint.
_OUT_OF_RANGE = "22003"


def _set_movement(rows: str, delta_on_hand: str) -> str:
    """The ledger row of a set: how far on_hand moved, under the caller's key."""
    return record_movements(
        "adjust",
        rows=rows,
        delta_on_hand=delta_on_hand,
        delta_reserved="0",
        reference=":reference",
        key=":key",
    )


# Compare-and-set. The snapshot row `cur` must carry the expected version too, so the ledger delta
# is computed from exactly the on_hand that version had.
_ADJUST = text(
    f"""
    WITH cur AS (
        SELECT sku, location, on_hand FROM stock_levels
         WHERE sku = :sku AND location = :location AND version = :expected
           AND NOT EXISTS (SELECT 1 FROM stock_movements WHERE idempotency_key = :key)
    ), changed AS (
        UPDATE stock_levels s SET on_hand = :quantity, version = s.version + 1, updated_at = now()
          FROM cur
         WHERE s.sku = cur.sku AND s.location = cur.location
           AND s.version = :expected AND s.reserved <= :quantity
        RETURNING s.sku, s.location, s.on_hand, s.reserved, s.version, cur.on_hand AS old_on_hand
    ), ledger AS ({_set_movement("changed", "on_hand - old_on_hand")})
    SELECT sku, location, on_hand, reserved, version FROM changed
    """
)

# Creating a stock row is a compare-and-set against "no row yet" (expected version 0).
_CREATE = text(
    f"""
    WITH created AS (
        INSERT INTO stock_levels (sku, location, on_hand, reserved, version, slot)
        SELECT :sku, :location, :quantity, 0, 1, :slot
         WHERE NOT EXISTS (SELECT 1 FROM stock_movements WHERE idempotency_key = :key)
        ON CONFLICT (sku, location) DO NOTHING
        RETURNING sku, location, on_hand, reserved, version
    ), ledger AS ({_set_movement("created", "on_hand")})
    SELECT sku, location, on_hand, reserved, version FROM created
    """
)

_LEVELS = text(
    "SELECT sku, location, on_hand, reserved, version FROM stock_levels"
    " WHERE sku = ANY (:skus) ORDER BY sku, location"
).bindparams(bindparam("skus", type_=ARRAY(Text)))

_SKU_LEVELS = text(
    "SELECT sku, location, on_hand, reserved, version FROM stock_levels WHERE sku = :sku ORDER BY location"
)

_LEVEL = text(
    "SELECT sku, location, on_hand, reserved, version FROM stock_levels"
    " WHERE sku = :sku AND location = :location"
)

_MOVEMENT_EXISTS = text("SELECT 1 FROM stock_movements WHERE idempotency_key = :key")


def _level(row: Any) -> StockLevel:
    return StockLevel(
        sku=row.sku,
        location=row.location,
        on_hand=row.on_hand,
        reserved=row.reserved,
        version=row.version,
    )


def check_quantity(quantity: int, *, minimum: int) -> int:
    """Refuse a quantity outside ``minimum``..bigint before it reaches SQL (and overflows there)."""
    if not minimum <= quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity must be from {minimum} to {MAX_QUANTITY}, got {quantity}")
    return quantity


class LevelStore(ShardedStore):
    """Stock rows: on_hand and reserved of one SKU at one location, and the version of the pair."""

    async def receive(
        self,
        sku: str,
        location: str,
        quantity: int,
        *,
        idempotency_key: str,
        reference: str = "receipt",
        check_catalog: bool = False,
    ) -> StockLevel:
        """Add received units. The same key twice adds them once.

        The key is scoped to the sku and location, so one purchase order's key can receive each of its
        lines; the same key with another quantity is refused, since replaying it would hide the mismatch.
        With ``check_catalog`` a SKU that is not in the catalog is refused (``UnknownProduct``): the
        operator entrypoints ask for it unless told to allow unknown products; seeding and tests of the
        stock mechanics leave it off.
        """
        check_quantity(quantity, minimum=1)
        if check_catalog:
            await require_products(self.databases.core_autocommit, [sku])
        key = receipt_key(sku, location, idempotency_key)
        params = {
            "sku": sku, "location": location, "quantity": quantity, "reference": reference, "key": key,
            "slot": slot_of(sku),
        }  # fmt: skip

        async def attempt() -> Any:
            shard = self.router.shard_of(sku)
            async with unavailable_as(shard_label(shard)), self._engine(shard).begin() as conn:
                row = (await conn.execute(_RECEIVE, params)).first()
                if row is None:
                    row = (await conn.execute(_RECEIVED, {"key": key})).one()
                    if row.received != quantity:
                        raise IdempotencyKeyConflict(
                            f"idempotency key {idempotency_key!r} already received {row.received} units "
                            f"of {sku}@{location}, not {quantity}; use a new key",
                            sku=sku,
                            location=location,
                            idempotency_key=idempotency_key,
                            received=row.received,
                            quantity=quantity,
                        )
            return row

        try:
            row = await rerouted(self.databases, attempt)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _OUT_OF_RANGE:
                raise
            raise InvalidInput(
                f"receiving {quantity} units would take {sku}@{location} past the largest on_hand, "
                f"{MAX_QUANTITY}",
                sku=sku,
                location=location,
                quantity=quantity,
            ) from None
        return _level(row)

    async def adjust(
        self,
        sku: str,
        location: str,
        quantity: int,
        *,
        expected_version: int,
        idempotency_key: str,
        reference: str = "adjustment",
        check_catalog: bool = False,
    ) -> StockLevel:
        """Set on_hand if the row is still at ``expected_version`` (0: the row must not exist).

        Creating a row brings stock in like a receipt, so ``check_catalog`` refuses it for a SKU that
        is not in the catalog; setting a row that exists is never refused for that.
        """
        check_quantity(quantity, minimum=0)
        if check_catalog and expected_version == 0:
            await require_products(self.databases.core_autocommit, [sku])
        params = {
            "sku": sku,
            "location": location,
            "quantity": quantity,
            "expected": expected_version,
            "reference": reference,
            "key": adjustment_key(idempotency_key),
            "slot": slot_of(sku),
        }

        async def attempt() -> tuple[Any, Any, Any]:
            shard = self.router.shard_of(sku)
            async with unavailable_as(shard_label(shard)), self._engine(shard).begin() as conn:
                statement = _CREATE if expected_version == 0 else _ADJUST
                row = (await conn.execute(statement, params)).first()
                if row is not None:
                    return row, None, None
                replayed = await conn.scalar(_MOVEMENT_EXISTS, {"key": params["key"]})
                current = (await conn.execute(_LEVEL, {"sku": sku, "location": location})).first()
                if current is None:
                    await refuse_if_moved(conn, shard, [sku])
            return None, replayed, current

        row, replayed, current = await rerouted(self.databases, attempt)
        if row is not None:
            return _level(row)
        if replayed and current is not None:
            return _level(current)
        raise _adjust_failure(sku, location, quantity, expected_version, current)

    # --- reads -------------------------------------------------------------------------------

    async def get(self, sku: str) -> list[StockLevel]:
        """Every location of one SKU: one indexed query on its shard, the point-read hot path."""

        async def attempt() -> list[StockLevel]:
            shard = self.router.shard_of(sku)
            async with unavailable_as(shard_label(shard)), self._autocommit(shard).connect() as conn:
                levels = [_level(r) for r in (await conn.execute(_SKU_LEVELS, {"sku": sku})).all()]
                if not levels:
                    await refuse_if_moved(conn, shard, [sku])
            return levels

        levels = await rerouted(self.databases, attempt)
        if not levels:
            raise UnknownSku(f"unknown sku {sku!r}: no stock row on any location", sku=sku)
        return levels

    async def get_many(self, skus: Sequence[str]) -> dict[str, list[StockLevel]]:
        """Read many SKUs, one query per shard, all shards concurrently; any shard down fails it."""
        levels, unavailable = await self.get_many_reachable(skus)
        if unavailable:
            raise unavailable[0]
        return levels

    async def get_many_reachable(
        self, skus: Sequence[str]
    ) -> tuple[dict[str, list[StockLevel]], list[ShardUnavailable]]:
        """Like ``get_many``, but a shard that is down costs only its own SKUs: the levels read from
        the shards that answered, and one ShardUnavailable (naming its ``skus``) per shard that did not."""
        groups = self.router.group_skus(dict.fromkeys(skus))

        async def read(shard: int, shard_skus: list[str]) -> list[StockLevel]:
            async with unavailable_as(shard_label(shard)), self._autocommit(shard).connect() as conn:
                rows = (await conn.execute(_LEVELS, {"skus": shard_skus})).all()
            return [_level(r) for r in rows]

        results = await asyncio.gather(
            *(read(s, group) for s, group in groups.items()), return_exceptions=True
        )
        levels: dict[str, list[StockLevel]] = {}
        unavailable: list[ShardUnavailable] = []
        for (shard, shard_skus), batch in zip(groups.items(), results, strict=True):
            if isinstance(batch, ShardUnavailable):
                batch.details.update(shard=shard, skus=shard_skus)
                unavailable.append(batch)
                continue
            if isinstance(batch, BaseException):
                raise batch
            for level in batch:
                levels.setdefault(level.sku, []).append(level)
        return levels, unavailable


def _adjust_failure(sku: str, location: str, quantity: int, expected: int, current: Any) -> Exception:
    if current is None:
        return UnknownSku(f"unknown sku {sku!r} at location {location!r}", sku=sku, location=location)
    if current.version != expected:
        return VersionConflict(
            f"{sku}@{location} is at version {current.version}, not {expected}; re-read it and try again",
            sku=sku,
            location=location,
            expected=expected,
            actual=current.version,
        )
    return BelowReserved(
        f"cannot set {sku}@{location} to {quantity}: {current.reserved} units are reserved",
        sku=sku,
        location=location,
        requested=quantity,
        reserved=current.reserved,
    )
