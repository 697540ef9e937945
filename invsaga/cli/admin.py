"""Operator commands: migrate, read and set stock, bulk import, audit.

Each command parses its input, calls one store function and prints the answer; ``--json`` prints the
same answer for scripts. Every failure is one line on stderr and an exit code from ``cli.errors``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from invsaga.cli.errors import EXIT_CODES, run
from invsaga.cli.file_progress import run_reading
from invsaga.cli.settings import command_databases, load_command_settings
from invsaga.domain import errors
from invsaga.domain.keys import adhoc_key
from invsaga.domain.stock import DEFAULT_LOCATION, StockLevel
from invsaga.store.audit import AuditReport, audit
from invsaga.store.bulk_import import ImportResult, import_stock
from invsaga.store.databases import migrate_all, shard_label
from invsaga.store.stock import StockStore, check_quantity
from invsaga.store.stock_csv import LOCATION_RULE, MAX_QUANTITY, SKU_RULE

# A negative QTY such as "-5" must reach our validation instead of being parsed as an unknown option.
_QUANTITY_ARGS = {"ignore_unknown_options": True}

JsonOption = typer.Option(False, "--json", help="Print the result as JSON.")
SkuArgument = typer.Argument(metavar="SKU", help="The SKU code.")
LocationOption = typer.Option(DEFAULT_LOCATION, "--location", "-l", help="Stock location.")
AllowUnknownProductOption = typer.Option(
    False, "--allow-unknown-product", help="Accept stock for SKUs that are not in the catalog."
)

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
stock_app = typer.Typer(help="Read and change stock levels.", no_args_is_help=True)


def mount(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(stock_app, name="stock")
    app.command("audit", help="Check the stock invariants on every shard; exit 1 on any violation.")(
        audit_command
    )


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2))


def _level_view(level: StockLevel) -> dict[str, Any]:
    return {**level.model_dump(), "available": level.available}


def _print_levels(sku: str, levels: list[StockLevel], as_json: bool) -> None:
    totals = {
        "on_hand": sum(lv.on_hand for lv in levels),
        "reserved": sum(lv.reserved for lv in levels),
        "available": sum(lv.available for lv in levels),
    }
    if as_json:
        _print_json({"sku": sku, "locations": [_level_view(lv) for lv in levels], "total": totals})
        return
    print(f"{sku}")
    print(f"  {'location':<20} {'on_hand':>12} {'reserved':>12} {'available':>12} {'version':>8}")
    for lv in levels:
        print(f"  {lv.location:<20} {lv.on_hand:>12} {lv.reserved:>12} {lv.available:>12} {lv.version:>8}")
    print(f"  {'total':<20} {totals['on_hand']:>12} {totals['reserved']:>12} {totals['available']:>12}")


# --- db -----------------------------------------------------------------------------------------


async def _migrate() -> list[dict[str, Any]]:
    results = await migrate_all(load_command_settings())
    labels = ["core database", *(shard_label(i) for i in range(len(results) - 1))]
    return [
        {"database": d, "before": r.before, "after": r.after, "definitions": list(r.definitions)}
        for d, r in zip(labels, results, strict=True)
    ]


@db_app.command("migrate", help="Bring the core database and every shard to this release's schema.")
def migrate_command(as_json: bool = JsonOption) -> None:
    results = run(_migrate())
    if as_json:
        _print_json(results)
        return
    for r in results:
        applied = f"; applied {', '.join(r['definitions'])}" if r["definitions"] else ""
        note = "migrated" if r["before"] != r["after"] or r["definitions"] else "up to date"
        print(f"{r['database']}: schema {r['before']} -> {r['after']}{applied} ({note})")


# --- stock --------------------------------------------------------------------------------------


async def _get(sku: str) -> list[StockLevel]:
    SKU_RULE.require(sku)
    async with command_databases() as databases:
        return await StockStore(databases).get(sku)


@stock_app.command("get", help="Show a SKU at every location, with totals.")
def get_command(sku: str = SkuArgument, as_json: bool = JsonOption) -> None:
    _print_levels(sku, run(_get(sku)), as_json)


async def _set(sku: str, quantity: int, location: str, expected_version: int | None) -> StockLevel:
    SKU_RULE.require(sku)
    LOCATION_RULE.require(location)
    check_quantity(quantity, minimum=0)
    # A version is a bigint too: past it, the value would fail in SQL instead of here.
    if expected_version is not None and not 0 <= expected_version <= MAX_QUANTITY:
        raise errors.InvalidInput(
            f"--expected-version must be from 0 to {MAX_QUANTITY}, got {expected_version}"
        )
    async with command_databases() as databases:
        store = StockStore(databases)
        if expected_version is None:
            current = {lv.location: lv for lv in (await store.get_many([sku])).get(sku, [])}
            expected_version = current[location].version if location in current else 0
        return await store.adjust(
            sku,
            location,
            quantity,
            expected_version=expected_version,
            idempotency_key=adhoc_key("cli", uuid.uuid4()),
            reference="cli stock set",
            check_catalog=True,
        )


@stock_app.command("set", context_settings=_QUANTITY_ARGS, help="Set on_hand (compare-and-set on version).")
def set_command(
    sku: str = SkuArgument,
    qty: int = typer.Argument(metavar="QTY", help="New on_hand, at least what is reserved."),
    location: str = LocationOption,
    expected_version: int | None = typer.Option(
        None,
        "--expected-version",
        help="Version read earlier (0: the row must not exist); fail if it has changed since. "
        "Default: the current version.",
    ),
    as_json: bool = JsonOption,
) -> None:
    level = run(_set(sku, qty, location, expected_version))
    _print_levels(sku, [level], as_json)


async def _receive(sku: str, quantity: int, location: str, key: str, allow_unknown: bool) -> StockLevel:
    SKU_RULE.require(sku)
    LOCATION_RULE.require(location)
    check_quantity(quantity, minimum=1)
    async with command_databases() as databases:
        return await StockStore(databases).receive(
            sku,
            location,
            quantity,
            idempotency_key=key,
            reference="cli stock receive",
            check_catalog=not allow_unknown,
        )


@stock_app.command("receive", context_settings=_QUANTITY_ARGS, help="Add received units (idempotent by key).")
def receive_command(
    sku: str = SkuArgument,
    qty: int = typer.Argument(metavar="QTY", help="Units received, more than 0."),
    location: str = LocationOption,
    key: str | None = typer.Option(None, "--key", help="Idempotency key; the same key adds the units once."),
    allow_unknown_product: bool = AllowUnknownProductOption,
    as_json: bool = JsonOption,
) -> None:
    level = run(_receive(sku, qty, location, key or str(uuid.uuid4()), allow_unknown_product))
    _print_levels(sku, [level], as_json)


async def _import(path: Path, on_progress: Callable[[int], None], allow_unknown: bool) -> ImportResult:
    async with command_databases() as databases:
        return await import_stock(databases, path, on_progress=on_progress, check_catalog=not allow_unknown)


@stock_app.command("import", help="Set stock from a CSV with header sku,location,quantity.")
def import_command(
    file: Path = typer.Argument(metavar="FILE.csv", help="CSV with header sku,location,quantity."),
    allow_unknown_product: bool = AllowUnknownProductOption,
    as_json: bool = JsonOption,
) -> None:
    result = run_reading(file, lambda on_progress: _import(file, on_progress, allow_unknown_product))
    if as_json:
        _print_json(result.model_dump())
    else:
        print(
            f"read {result.rows_read} rows in {result.seconds:.1f}s: {result.applied} applied, "
            f"{result.unchanged} unchanged, {len(result.rejected)} rejected (batch {result.batch_id})"
        )
        for row in result.rejected:
            print(f"  line {row.line}: {row.sku} at {row.location}: {row.reason}")
    if result.rejected:
        raise typer.Exit(EXIT_CODES[errors.BelowReserved])


# --- audit --------------------------------------------------------------------------------------


async def _audit() -> AuditReport:
    async with command_databases() as databases:
        return await audit(databases)


def audit_command(as_json: bool = JsonOption) -> None:
    report = run(_audit())
    if as_json:
        _print_json({"clean": report.clean, **report.model_dump()})
    else:
        for v in report.violations:
            numbers = " ".join(f"{name}={value}" for name, value in v.numbers.items())
            print(
                f"invariant {v.invariant} violated on shard {v.shard}: sku {v.sku} at {v.location}: "
                f"{numbers} ({v.rule})"
            )
        unknown = report.unknown_products
        if unknown.skus:
            more = " ..." if unknown.skus > len(unknown.sample) else ""
            print(
                f"finding: {unknown.stock_rows} stock row(s) of {unknown.skus} sku(s) have no product in the "
                f"catalog (not a violation): {', '.join(unknown.sample)}{more}"
            )
        rows = sum(s.stock_rows for s in report.shards)
        verdict = "clean" if report.clean else f"{len(report.violations)} violation(s)"
        print(f"audit of {len(report.shards)} shard(s), {rows} stock rows: {verdict}")
    if not report.clean:
        raise typer.Exit(1)
