"""``invsaga catalog`` and the catalog rule of ``stock receive|import`` and ``audit``, as the real console
script against the test fleet."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from tests.helpers import rows_on_every_shard
from tests.integration.test_cli import invsaga  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("clean_shards")


def fresh(prefix: str = "CLI") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def catalog_rows(databases) -> list[tuple]:
    async with databases.core.connect() as conn:
        rows = await conn.execute(text("SELECT sku, name, price, currency, active, version FROM products"))
        return sorted(tuple(r) for r in rows)


async def test_add_get_list_change_deactivate_and_import(invsaga, tmp_path):  # noqa: F811
    sku = fresh()
    file = tmp_path / "catalog.csv"
    file.write_text(f"sku,name,price,currency,active\n{fresh()},Mug,1.50,EUR,true\n{fresh()},Cup,2,,false\n")

    added = await invsaga("catalog", "add", sku, "--name", "Blue mug", "--price", "12.50", "--json")
    other, imported = await asyncio.gather(
        invsaga("catalog", "add", sku, "--name", "Red mug", "--price", "12.50"),
        invsaga("catalog", "import", str(file)),
    )
    changed = await invsaga("catalog", "add", sku, "--name", "Red", "--price", "9", "--expected-version", "1")
    shown, listed, off = await asyncio.gather(
        invsaga("catalog", "get", sku),
        invsaga("catalog", "list", "--json", "--limit", "1000"),
        invsaga("catalog", "deactivate", sku, "--json"),
    )

    assert added.code == 0 and added.json() | {"updated_at": None} == {
        "sku": sku,
        "name": "Blue mug",
        "price": "12.50",
        "currency": "USD",
        "active": True,
        "version": 1,
        "updated_at": None,
        "result": "created",
    }
    assert other.code == 5 and "already exists at version 1" in other.error_line
    assert imported.code == 0 and "2 applied (2 new), 0 unchanged" in imported.stdout, imported.stdout
    assert changed.code == 0 and "version 2 (changed)" in changed.stdout
    assert shown.code == 0 and shown.stdout.startswith(f"{sku}: ")
    assert listed.code == 0 and 0 < len(listed.json()) <= 1000
    assert off.code == 0 and (off.json()["active"], off.json()["result"]) == (False, "deactivated")


async def test_bad_input_is_one_line_and_changes_nothing(invsaga, databases, tmp_path):  # noqa: F811
    sku = fresh()
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text(f"sku,name,price,currency,active\n{fresh()},Mug,1,USD,true\n{fresh()},Mug,1,EURO,\n")
    before = await catalog_rows(databases)

    results = await asyncio.gather(
        invsaga("catalog", "add", sku, "--name", "Mug", "--price", "1.005"),
        invsaga("catalog", "add", sku, "--name", "Mug", "--price", "1", "--currency", "usd"),
        invsaga("catalog", "import", str(bad_file)),
        invsaga("catalog", "get", sku),
    )

    assert [r.code for r in results] == [2, 2, 2, 3], [r.stderr for r in results]
    for result in results:
        assert result.error_line.startswith("error: ")
    assert "line 3" in results[2].error_line
    assert await catalog_rows(databases) == before


async def test_stock_for_an_unknown_sku_needs_the_flag_and_audit_reports_it(
    invsaga,  # noqa: F811
    databases,
    tmp_path,
):
    unknown = fresh("CLIX")
    file = tmp_path / "stock.csv"
    file.write_text(f"sku,location,quantity\n{unknown},main,4\n{unknown},east,4\n")

    refused, refused_import = await asyncio.gather(
        invsaga("stock", "receive", unknown, "5"),
        invsaga("stock", "import", str(file)),
    )
    nothing = await rows_on_every_shard(databases, "SELECT 1 FROM stock_levels WHERE sku = :s", s=unknown)
    allowed = await invsaga("stock", "receive", unknown, "5", "--location", "west", "--allow-unknown-product")
    imported = await invsaga("stock", "import", str(file), "--allow-unknown-product")
    audited, audited_json = await asyncio.gather(invsaga("audit"), invsaga("audit", "--json"))

    assert refused.code == 3 and "not in the catalog" in refused.error_line
    assert refused_import.code == 3 and "line 2" in refused_import.error_line
    assert "line 3" in refused_import.error_line
    assert nothing == []
    assert allowed.code == 0 and imported.code == 0, (allowed.stderr, imported.stderr)
    assert audited.code == 0 and "3 stock row(s) of 1 sku(s) have no product" in audited.stdout
    report = audited_json.json()
    assert report["clean"] is True
    assert report["unknown_products"] == {"stock_rows": 3, "skus": 1, "sample": [unknown]}
