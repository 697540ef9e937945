"""The product catalog in the core database: versioned, idempotent writes and keyset-paginated reads.

A product's ``version`` moves only when a write changes something: the same values sent again change
nothing, so any write can be retried safely. A write may be a compare-and-set on the version (HTTP
If-Match), a create that must not find the product (``expected_version=0``, HTTP ``If-None-Match: *``),
or a plain create, which also accepts finding exactly the same product (a retried create).

Stock may be checked against the catalog (``missing_products``): one set-based query per batch of SKUs,
never one per SKU, so a million-row import or an audit stays a handful of round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import Text

from invsaga.domain.catalog import ProductFields
from invsaga.domain.errors import ProductExists, ProductNotFound, UnknownProduct, VersionConflict
from invsaga.store.databases import unavailable_as

#: SKUs checked against the catalog per query: big enough to amortize the round trip, small enough
#: that one array parameter stays well under a megabyte.
CHECK_BATCH = 10_000
#: How many unknown SKUs a refusal names; the count is always exact.
MAX_NAMED_SKUS = 20

_COLUMNS = "sku, name, price, currency, active, version, updated_at"
#: The values a write can change; a write whose values are all equal to the row's is no change.
_DIFFERS = "(p.name, p.price, p.currency, p.active) IS DISTINCT FROM (:name, :price, :currency, :active)"

_CREATE = text(
    f"""
    INSERT INTO products (sku, name, price, currency, active, version)
    VALUES (:sku, :name, :price, :currency, :active, 1)
    ON CONFLICT (sku) DO NOTHING
    RETURNING {_COLUMNS}
    """
)

_COMPARE_AND_SET = text(
    f"""
    UPDATE products p
       SET name = :name, price = :price, currency = :currency, active = :active,
           version = p.version + 1, updated_at = now()
     WHERE p.sku = :sku AND p.version = :expected AND {_DIFFERS}
    RETURNING {_COLUMNS}
    """
)

_DEACTIVATE = text(
    f"UPDATE products SET active = false, version = version + 1, updated_at = now()"
    f" WHERE sku = :sku AND active RETURNING {_COLUMNS}"
)

_PRODUCT = text(f"SELECT {_COLUMNS} FROM products WHERE sku = :sku")

_PAGE = text(f"SELECT {_COLUMNS} FROM products WHERE sku > :after ORDER BY sku LIMIT :limit")

# Bulk upsert for seeding (dev stack, tests, benchmarks): the row only moves when its values do.
_UPSERT = text(
    """
    INSERT INTO products AS p (sku, name, price, currency, active, version)
    VALUES (:sku, :name, :price, :currency, :active, 1)
    ON CONFLICT (sku) DO UPDATE
       SET name = excluded.name, price = excluded.price, currency = excluded.currency,
           active = excluded.active, version = p.version + 1, updated_at = now()
     WHERE (p.name, p.price, p.currency, p.active)
           IS DISTINCT FROM (excluded.name, excluded.price, excluded.currency, excluded.active)
    """
)

_MISSING = text(
    "SELECT s.sku FROM unnest(:skus) AS s (sku)"
    " WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.sku = s.sku) ORDER BY s.sku"
).bindparams(bindparam("skus", type_=ARRAY(Text)))


class Product(ProductFields):
    """A product to write (the seeding helpers and the dev stack build these)."""


class StoredProduct(ProductFields):
    version: int
    updated_at: datetime


class ProductChange(BaseModel):
    product: StoredProduct
    created: bool
    #: False when the write found the product already exactly so: nothing moved, not even the version.
    changed: bool


class ProductPage(BaseModel):
    items: list[StoredProduct]
    #: The last SKU of this page when more may follow; None at the end.
    next_after: str | None


def _stored(row: Any) -> StoredProduct:
    # Trusted as stored: a row written before core_003's checks must still be readable.
    return StoredProduct.model_construct(**row._mapping)


def _same_values(stored: StoredProduct, product: ProductFields) -> bool:
    return (stored.name, stored.price, stored.currency, stored.active) == (
        product.name,
        product.price,
        product.currency,
        product.active,
    )


async def _current(conn: AsyncConnection, sku: str) -> StoredProduct | None:
    row = (await conn.execute(_PRODUCT, {"sku": sku})).first()
    return None if row is None else _stored(row)


def _stale(sku: str, expected: int, actual: int) -> VersionConflict:
    return VersionConflict(
        f"product {sku} is at version {actual}, not {expected}; re-read it and try again",
        sku=sku,
        expected=expected,
        actual=actual,
    )


async def put_product(
    core: AsyncEngine, product: ProductFields, *, expected_version: int | None = None
) -> ProductChange:
    """Write one product; see the module docstring for what ``expected_version`` means.

    Raises ``VersionConflict`` when the version is stale (or, for 0, the product exists),
    ``ProductNotFound`` for a compare-and-set on a product that does not exist, and ``ProductExists``
    when a plain create finds the product with other values.
    """
    params = product.model_dump()
    async with unavailable_as("core database"), core.begin() as conn:
        if expected_version is None or expected_version == 0:
            row = (await conn.execute(_CREATE, params)).first()
            if row is not None:
                return ProductChange(product=_stored(row), created=True, changed=True)
            current = await _current(conn, product.sku)
            if current is None:  # deleted between the two statements: nothing deletes, but be exact
                raise ProductNotFound(f"product {product.sku} vanished; try again", sku=product.sku)
            if expected_version == 0:
                raise VersionConflict(
                    f"product {product.sku} already exists (version {current.version})",
                    sku=product.sku,
                    expected=0,
                    actual=current.version,
                )
            if not _same_values(current, product):
                raise ProductExists(
                    f"product {product.sku} already exists at version {current.version} with other "
                    "values; send that version to change it",
                    sku=product.sku,
                    actual=current.version,
                )
            return ProductChange(product=current, created=False, changed=False)
        row = (await conn.execute(_COMPARE_AND_SET, {**params, "expected": expected_version})).first()
        if row is not None:
            return ProductChange(product=_stored(row), created=False, changed=True)
        current = await _current(conn, product.sku)
    if current is None:
        raise ProductNotFound(f"no product {product.sku!r} in the catalog", sku=product.sku)
    if current.version != expected_version:
        raise _stale(product.sku, expected_version, current.version)
    return ProductChange(product=current, created=False, changed=False)


async def deactivate_product(core: AsyncEngine, sku: str) -> ProductChange:
    """Take a product off sale (checkouts refuse it); a product already inactive is left as it is."""
    async with unavailable_as("core database"), core.begin() as conn:
        row = (await conn.execute(_DEACTIVATE, {"sku": sku})).first()
        if row is not None:
            return ProductChange(product=_stored(row), created=False, changed=True)
        current = await _current(conn, sku)
    if current is None:
        raise ProductNotFound(f"no product {sku!r} in the catalog", sku=sku)
    return ProductChange(product=current, created=False, changed=False)


async def get_product(core: AsyncEngine, sku: str) -> StoredProduct:
    async with unavailable_as("core database"), core.connect() as conn:
        current = await _current(conn, sku)
    if current is None:
        raise ProductNotFound(f"no product {sku!r} in the catalog", sku=sku)
    return current


async def list_products(core: AsyncEngine, *, after: str | None, limit: int) -> ProductPage:
    """One page in SKU order, after ``after`` (exclusive): a keyset read on the primary key, as fast on
    page ten thousand as on page one."""
    async with unavailable_as("core database"), core.connect() as conn:
        rows = (await conn.execute(_PAGE, {"after": after or "", "limit": limit + 1})).all()
    items = [_stored(row) for row in rows[:limit]]
    return ProductPage(items=items, next_after=items[-1].sku if len(rows) > limit else None)


async def upsert_products(core: AsyncEngine, items: Sequence[ProductFields]) -> None:
    """Create or update many products at once, without a precondition (seeding, not operators)."""
    if not items:
        return
    async with unavailable_as("core database"), core.begin() as conn:
        await conn.execute(_UPSERT, [item.model_dump() for item in items])


async def missing_products(core: AsyncEngine, skus: Sequence[str]) -> list[str]:
    """The SKUs of ``skus`` that have no product (active or not), in SKU order; one query per batch."""
    missing: list[str] = []
    unique = sorted(set(skus))
    async with unavailable_as("core database"), core.connect() as conn:
        for start in range(0, len(unique), CHECK_BATCH):
            batch = unique[start : start + CHECK_BATCH]
            missing += (await conn.execute(_MISSING, {"skus": batch})).scalars().all()
    return missing


def unknown_product_error(missing: Sequence[str], **details: Any) -> UnknownProduct:
    named = ", ".join(missing[:MAX_NAMED_SKUS]) + (" ..." if len(missing) > MAX_NAMED_SKUS else "")
    noun = "sku is" if len(missing) == 1 else f"{len(missing)} skus are"
    return UnknownProduct(
        f"{noun} not in the catalog: {named}; add the product first, or allow unknown products",
        skus=list(missing[:MAX_NAMED_SKUS]),
        unknown_count=len(missing),
        **details,
    )


async def require_products(core: AsyncEngine, skus: Sequence[str]) -> None:
    """Refuse (``UnknownProduct``) if any of ``skus`` is not in the catalog."""
    missing = await missing_products(core, skus)
    if missing:
        raise unknown_product_error(missing)
