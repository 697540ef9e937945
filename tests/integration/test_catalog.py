"""The catalog store on the real core database: versioned idempotent writes, compare-and-set races, the
all-or-nothing CSV import, stock refused for SKUs that are not in the catalog, and audit's finding."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from invsaga.domain.catalog import ProductFields
from invsaga.domain.errors import (
    InvalidInput,
    ProductExists,
    ProductNotFound,
    UnknownProduct,
    VersionConflict,
)
from invsaga.store.audit import audit
from invsaga.store.bulk_import import import_stock
from invsaga.store.catalog import (
    Product,
    deactivate_product,
    get_product,
    list_products,
    missing_products,
    put_product,
    upsert_products,
)
from invsaga.store.catalog_csv import import_catalog
from tests.helpers import assert_clean_audit, rows_on_every_shard, skus_on_shard, stock_up


def fresh(prefix: str = "CAT") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mug(sku: str, name: str = "Blue mug", price: str = "12.50", **more: object) -> ProductFields:
    return ProductFields(sku=sku, name=name, price=Decimal(price), **more)  # type: ignore[arg-type]


async def product_count(databases) -> int:
    async with databases.core.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM products")))


async def catalog_state(databases) -> list[tuple]:
    async with databases.core.connect() as conn:
        rows = await conn.execute(text("SELECT sku, name, price, currency, active, version FROM products"))
        return sorted(tuple(r) for r in rows)


# --- writes -------------------------------------------------------------------------------------------


async def test_create_then_same_values_again_changes_nothing_not_even_the_version(databases):
    sku = fresh()
    first = await put_product(databases.core, mug(sku))
    again = await put_product(databases.core, mug(sku, price="12.5"))  # the same price, written otherwise
    same_version = await put_product(databases.core, mug(sku), expected_version=1)

    assert (first.created, first.changed, first.product.version) == (True, True, 1)
    assert (again.created, again.changed, again.product.version) == (False, False, 1)
    assert (same_version.changed, same_version.product.version) == (False, 1)
    assert again.product.updated_at == first.product.updated_at


async def test_a_change_bumps_the_version_by_one_and_a_stale_version_changes_nothing(databases):
    sku = fresh()
    await put_product(databases.core, mug(sku))
    changed = await put_product(databases.core, mug(sku, price="13.00"), expected_version=1)
    before = await catalog_state(databases)

    with pytest.raises(VersionConflict) as stale:
        await put_product(databases.core, mug(sku, price="99.00"), expected_version=1)
    with pytest.raises(ProductExists):
        await put_product(databases.core, mug(sku, price="99.00"))
    with pytest.raises(VersionConflict):
        await put_product(databases.core, mug(sku), expected_version=0)
    with pytest.raises(ProductNotFound):
        await put_product(databases.core, mug(fresh()), expected_version=1)

    assert (changed.changed, changed.product.version, changed.product.price) == (True, 2, Decimal("13.00"))
    assert stale.value.details["actual"] == 2
    assert await catalog_state(databases) == before


async def test_racing_compare_and_sets_on_one_version_exactly_one_wins(databases):
    sku = fresh()
    await put_product(databases.core, mug(sku))

    async def attempt(n: int) -> str:
        try:
            await put_product(databases.core, mug(sku, name=f"mug {n}"), expected_version=1)
        except VersionConflict:
            return "stale"
        return "won"

    outcomes = await asyncio.gather(*(attempt(n) for n in range(30)))

    assert sorted(outcomes).count("won") == 1 and outcomes.count("stale") == 29
    stored = await get_product(databases.core, sku)
    assert stored.version == 2 and stored.name == f"mug {outcomes.index('won')}"


async def test_racing_creates_of_one_product_create_it_once(databases):
    sku = fresh()
    changes = await asyncio.gather(*(put_product(databases.core, mug(sku)) for _ in range(20)))
    assert sum(c.created for c in changes) == 1
    assert {c.product.version for c in changes} == {1}


async def test_deactivate_is_idempotent_and_seeding_upserts_only_bump_on_change(databases):
    sku = fresh()
    await upsert_products(databases.core, [Product(sku=sku, name="seed", price=Decimal("1.00"))])
    await upsert_products(databases.core, [Product(sku=sku, name="seed", price=Decimal("1.00"))])
    assert (await get_product(databases.core, sku)).version == 1

    first = await deactivate_product(databases.core, sku)
    second = await deactivate_product(databases.core, sku)

    assert (first.changed, first.product.active, first.product.version) == (True, False, 2)
    assert (second.changed, second.product.version) == (False, 2)
    with pytest.raises(ProductNotFound):
        await deactivate_product(databases.core, fresh())


async def test_pages_walk_every_product_once_in_sku_order(databases):
    prefix = fresh("PAGE")
    skus = [f"{prefix}-{n:02d}" for n in range(7)]
    await upsert_products(databases.core, [Product(sku=s, name=s, price=Decimal("1")) for s in skus])

    seen, after = [], f"{prefix}-"
    while True:
        page = await list_products(databases.core, after=after, limit=3)
        seen += [p.sku for p in page.items if p.sku.startswith(prefix)]
        if page.next_after is None or not page.next_after.startswith(prefix):
            break
        after = page.next_after

    assert seen == skus


# --- the catalog CSV -----------------------------------------------------------------------------------


async def test_catalog_import_applies_then_reimport_changes_nothing(databases):
    a, b = fresh(), fresh()
    csv = ["sku,name,price,currency,active\n", f"{a},Mug,12.50,USD,true\n", f"{b},Shirt,25,,false\n"]

    first = await import_catalog(databases.core, csv)
    second = await import_catalog(databases.core, csv)

    assert (first.rows_read, first.applied, first.created, first.unchanged) == (2, 2, 2, 0)
    assert (second.applied, second.unchanged) == (0, 2)
    shirt = await get_product(databases.core, b)
    assert (shirt.price, shirt.currency, shirt.active, shirt.version) == (Decimal("25.00"), "USD", False, 1)


async def test_a_bad_catalog_file_changes_nothing_and_names_every_bad_line(databases):
    good, dup = fresh(), fresh()
    await put_product(databases.core, mug(good))
    before = await catalog_state(databases)
    csv = [
        "sku,name,price,currency,active\n",
        f"{good},Changed name,1.00,USD,true\n",  # line 2: fine, but must not apply
        f"{fresh()},Mug,1.005,USD,true\n",  # 3: three decimals
        f"{fresh()},Mug,-1,USD,true\n",  # 4: negative
        f"{fresh()},Mug,10000000000,USD,true\n",  # 5: past numeric(12,2)
        f"{fresh()},Mug,1,usd,true\n",  # 6: lowercase currency
        f"{fresh()},Mug,1,ABC,true\n",  # 7: not ISO 4217
        f"{fresh()},,1,USD,true\n",  # 8: empty name
        f"{fresh()},Mug,1,USD,maybe\n",  # 9: not a boolean
        "bad sku!,Mug,1,USD,true\n",  # 10: sku rule
        f"{dup},Mug,1,USD,true\n",  # 11
        f"{dup},Mug,2,USD,true\n",  # 12: duplicate of 11
        "only,three,fields\n",  # 13
    ]

    with pytest.raises(InvalidInput) as refused:
        await import_catalog(databases.core, csv)

    assert [p["line"] for p in refused.value.details["problems"]] == [*range(3, 11), 12, 13]
    assert refused.value.details["problem_count"] == 10
    assert "duplicate of line 11" in refused.value.details["problems"][8]["reason"]
    assert await catalog_state(databases) == before


# --- stock for SKUs not in the catalog -----------------------------------------------------------------


async def test_receive_refuses_an_unknown_sku_unless_allowed(databases, store, clean_shards):
    (known, unknown) = skus_on_shard(store.router, 0, 2, prefix="RCV")
    await put_product(databases.core, mug(known))

    await store.receive(known, "main", 5, idempotency_key="k-known", check_catalog=True)
    with pytest.raises(UnknownProduct) as refused:
        await store.receive(unknown, "main", 5, idempotency_key="k-unknown", check_catalog=True)
    with pytest.raises(UnknownProduct):
        await store.adjust(unknown, "main", 5, expected_version=0, idempotency_key="a-1", check_catalog=True)
    nothing = await rows_on_every_shard(databases, "SELECT 1 FROM stock_levels WHERE sku = :s", s=unknown)
    allowed = await store.receive(unknown, "main", 5, idempotency_key="k-unknown", check_catalog=False)
    # A row that exists may be set whatever the catalog says: only bringing new stock in is refused.
    reset = await store.adjust(
        unknown, "main", 7, expected_version=1, idempotency_key="a-2", check_catalog=True
    )

    assert unknown in refused.value.message and refused.value.details["skus"] == [unknown]
    assert nothing == [] and allowed.on_hand == 5 and reset.on_hand == 7
    await assert_clean_audit(databases)


async def test_stock_import_lists_every_unknown_sku_line_and_applies_nothing(databases, store, clean_shards):
    known = [fresh("IMP") for _ in range(3)]
    unknown = [fresh("IMPX") for _ in range(3)]
    await upsert_products(databases.core, [Product(sku=s, name=s, price=Decimal("1")) for s in known])
    lines = ["sku,location,quantity\n"]
    for n in range(3):
        lines += [f"{known[n]},main,5\n", f"{unknown[n]},main,5\n", f"{unknown[n]},east,5\n"]

    with pytest.raises(UnknownProduct) as refused:
        await import_stock(databases, lines, check_catalog=True, chunk_rows=2)
    nothing = await rows_on_every_shard(databases, "SELECT sku FROM stock_levels")
    allowed = await import_stock(databases, lines, check_catalog=False)

    assert [p["line"] for p in refused.value.details["problems"]] == [3, 4, 6, 7, 9, 10]
    assert refused.value.details["problem_count"] == 6
    assert nothing == [] and allowed.applied == 9
    await assert_clean_audit(databases)


async def test_malformed_rows_and_unknown_skus_are_listed_together(databases, clean_shards):
    lines = ["sku,location,quantity\n", f"{fresh('IMPX')},main,5\n", "MUG,main,-1\n"]
    with pytest.raises(InvalidInput) as refused:
        await import_stock(databases, lines, check_catalog=True)
    reasons = {p["line"]: p["reason"] for p in refused.value.details["problems"]}
    assert sorted(reasons) == [2, 3] and "not in the catalog" in reasons[2]


async def test_many_skus_are_checked_against_the_core_in_batches(databases):
    known = [fresh("BATCH") for _ in range(5)]
    await upsert_products(databases.core, [Product(sku=s, name=s, price=Decimal("1")) for s in known])
    unknown = sorted(fresh("BATCHX") for _ in range(25_000))
    assert await missing_products(databases.core, known + unknown + known) == unknown


# --- audit ---------------------------------------------------------------------------------------------


async def test_audit_reports_stock_without_a_product_as_a_finding_not_a_violation(
    databases, store, clean_shards
):
    known = fresh("AUD")
    unknown = [fresh("AUDX") for _ in range(3)]
    await put_product(databases.core, mug(known))
    await stock_up(store, known, 5)
    for sku in unknown:
        await stock_up(store, sku, 5)
        await stock_up(store, sku, 2, location="east")

    report = await audit(databases)

    assert report.clean
    assert (report.unknown_products.skus, report.unknown_products.stock_rows) == (3, 6)
    assert report.unknown_products.sample == sorted(unknown)
