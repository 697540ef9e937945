"""``invsaga catalog add|get|list|deactivate|import``: the product catalog in the core database.

The same store functions as ``/v1/products`` answer, with the same rules: ``add`` creates a product, or
confirms one that already has exactly these values; changing one takes ``--expected-version`` (the
version ``get`` shows), the CLI's If-Match. Only the core database is needed, so a shard being down
does not stop the catalog.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from invsaga.cli.errors import run
from invsaga.cli.file_progress import run_reading
from invsaga.cli.settings import load_command_settings
from invsaga.domain.catalog import DEFAULT_CURRENCY, ProductFields
from invsaga.domain.errors import InvalidInput
from invsaga.store.catalog import (
    ProductChange,
    StoredProduct,
    deactivate_product,
    get_product,
    list_products,
    put_product,
)
from invsaga.store.catalog_csv import CatalogImportResult, import_catalog
from invsaga.store.databases import Databases
from invsaga.store.migrations import check_schema
from invsaga.store.stock_csv import MAX_QUANTITY, SKU_RULE

#: Products per page read under ``catalog list``: large pages, few round trips, bounded memory per page.
_PAGE = 500

catalog_app = typer.Typer(
    help="The product catalog: add, read, list, deactivate and import.", no_args_is_help=True
)

JsonOption = typer.Option(False, "--json", help="Print the result as JSON.")
SkuArgument = typer.Argument(metavar="SKU", help="The SKU code.")


def mount(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")


@asynccontextmanager
async def _core() -> AsyncIterator[Databases]:
    # Shards unchecked: the catalog lives in the core database alone, whose schema is checked.
    databases = await Databases.open(load_command_settings(), check=False)
    try:
        await check_schema(databases.core, "core", label="core database")
        yield databases
    finally:
        await databases.close()


def _view(product: StoredProduct) -> dict[str, Any]:
    return product.model_dump(mode="json")


def _print_product(product: StoredProduct, as_json: bool, note: str | None = None) -> None:
    if as_json:
        print(json.dumps(_view(product) | ({"result": note} if note else {}), indent=2))
        return
    state = "active" if product.active else "inactive"
    suffix = f" ({note})" if note else ""
    print(
        f"{product.sku}: {product.name} - {product.price} {product.currency}, {state}, "
        f"version {product.version}{suffix}"
    )


def _outcome(change: ProductChange) -> str:
    if change.created:
        return "created"
    return "changed" if change.changed else "unchanged"


def _product(sku: str, name: str, price: str, currency: str, active: bool) -> ProductFields:
    SKU_RULE.require(sku)
    try:
        return ProductFields(sku=sku, name=name, price=price, currency=currency, active=active)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise InvalidInput(f"invalid {field} {error.get('input')!r}: {error['msg']}") from None


async def _add(
    sku: str, name: str, price: str, currency: str, active: bool, expected_version: int | None
) -> ProductChange:
    product = _product(sku, name, price, currency, active)
    if expected_version is not None and not 0 <= expected_version <= MAX_QUANTITY:
        raise InvalidInput(f"--expected-version must be from 0 to {MAX_QUANTITY}, got {expected_version}")
    async with _core() as databases:
        return await put_product(databases.core, product, expected_version=expected_version)


@catalog_app.command("add", help="Add a product (or change it with --expected-version).")
def add_command(
    sku: str = SkuArgument,
    name: str = typer.Option(..., "--name", help="The product's name, 1 to 200 characters."),
    price: str = typer.Option(..., "--price", help="Price, e.g. 12.50: at least 0, at most 2 decimals."),
    currency: str = typer.Option(DEFAULT_CURRENCY, "--currency", help="ISO 4217 code, e.g. EUR."),
    inactive: bool = typer.Option(False, "--inactive", help="Add it off sale: checkouts refuse it."),
    expected_version: int | None = typer.Option(
        None,
        "--expected-version",
        help="Change the product only if it is still at this version (0: only if it does not exist). "
        "Without it, an existing product with other values is refused.",
    ),
    as_json: bool = JsonOption,
) -> None:
    change = run(_add(sku, name, price, currency, not inactive, expected_version))
    _print_product(change.product, as_json, _outcome(change))


async def _get(sku: str) -> StoredProduct:
    SKU_RULE.require(sku)
    async with _core() as databases:
        return await get_product(databases.core_autocommit, sku)


@catalog_app.command("get", help="Show one product.")
def get_command(sku: str = SkuArgument, as_json: bool = JsonOption) -> None:
    _print_product(run(_get(sku)), as_json)


async def _list(limit: int | None, emit: Callable[[list[StoredProduct]], None]) -> int:
    """Read page after page, handing each to ``emit`` as it comes, so memory holds one page at most."""
    if limit is not None and limit < 1:
        raise InvalidInput(f"--limit must be at least 1, got {limit}")
    shown = 0
    after: str | None = None
    async with _core() as databases:
        while limit is None or shown < limit:
            size = _PAGE if limit is None else min(_PAGE, limit - shown)
            page = await list_products(databases.core_autocommit, after=after, limit=size)
            emit(page.items)
            shown += len(page.items)
            if page.next_after is None:
                break
            after = page.next_after
    return shown


class _JsonArray:
    """Prints one JSON array a page at a time: valid JSON at the end, never the whole list in memory."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, products: list[StoredProduct]) -> None:
        for product in products:
            item = json.dumps(_view(product), indent=2).replace("\n", "\n  ")
            print(("[\n  " if self.count == 0 else ",\n  ") + item, end="")
            self.count += 1

    def close(self) -> None:
        print("\n]" if self.count else "[]")


def _print_rows(products: list[StoredProduct]) -> None:
    for p in products:
        active = "yes" if p.active else "no"
        print(f"{p.sku:<24} {p.price!s:>14} {p.currency:<4} {active:<7} {p.version:>8}  {p.name}")


@catalog_app.command("list", help="List products in SKU order (all of them, or the first --limit).")
def list_command(
    limit: int | None = typer.Option(None, "--limit", min=1, help="Show at most this many."),
    as_json: bool = JsonOption,
) -> None:
    if as_json:
        array = _JsonArray()
        run(_list(limit, array))
        array.close()
        return
    print(f"{'sku':<24} {'price':>14} {'cur':<4} {'active':<7} {'version':>8}  name")
    shown = run(_list(limit, _print_rows))
    print(f"{shown} product(s)")


async def _deactivate(sku: str) -> ProductChange:
    SKU_RULE.require(sku)
    async with _core() as databases:
        return await deactivate_product(databases.core, sku)


@catalog_app.command("deactivate", help="Take a product off sale (checkouts refuse it); idempotent.")
def deactivate_command(sku: str = SkuArgument, as_json: bool = JsonOption) -> None:
    change = run(_deactivate(sku))
    _print_product(change.product, as_json, "deactivated" if change.changed else "already inactive")


async def _import(path: Path, on_progress: Callable[[int], None]) -> CatalogImportResult:
    async with _core() as databases:
        return await import_catalog(databases.core, path, on_progress=on_progress)


@catalog_app.command("import", help="Create or change products from a CSV; all or nothing.")
def import_command(
    file: Path = typer.Argument(metavar="FILE.csv", help="CSV with header sku,name,price,currency,active."),
    as_json: bool = JsonOption,
) -> None:
    result = run_reading(file, lambda on_progress: _import(file, on_progress))
    if as_json:
        print(json.dumps(result.model_dump(), indent=2))
        return
    print(
        f"read {result.rows_read} rows in {result.seconds:.1f}s: {result.applied} applied "
        f"({result.created} new), {result.unchanged} unchanged"
    )
