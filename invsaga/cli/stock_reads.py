"""``invsaga stock history`` and ``invsaga stock low``: a SKU's ledger, and the stock rows running low.

They are mounted on ``invsaga stock`` (``invsaga.cli.admin.stock_app``) beside the commands that change
stock, and read the same pages as ``GET /v1/stock/{sku}/movements`` and ``GET /v1/stock?below=N``.
"""

from __future__ import annotations

import json

import typer

from invsaga.cli.admin import JsonOption, SkuArgument, stock_app
from invsaga.cli.errors import run
from invsaga.cli.paging import collect
from invsaga.cli.settings import command_databases
from invsaga.store.stock_csv import LOCATION_RULE, SKU_RULE
from invsaga.store.stock_history import (
    LowStock,
    LowStockPage,
    Movement,
    MovementPage,
    check_threshold,
    low_stock,
    stock_movements,
)


def mount() -> None:
    stock_app.command("history", help="Show a SKU's stock movements (the ledger), newest first.")(
        history_command
    )
    stock_app.command(
        "low", help="List stock rows (per SKU and location) with fewer units available than --below."
    )(low_command)


def _more(next_cursor: str | None) -> None:
    if next_cursor:
        print(f"more rows follow: --cursor {next_cursor}")


async def _history(
    sku: str, location: str | None, limit: int, cursor: str | None
) -> tuple[list[Movement], str | None]:
    SKU_RULE.require(sku)
    if location is not None:
        LOCATION_RULE.require(location)
    async with command_databases(check=False) as databases:

        async def page(at: str | None, size: int) -> MovementPage:
            return await stock_movements(databases, sku, location=location, cursor=at, limit=size)

        return await collect(page, limit=limit, cursor=cursor)


def history_command(
    sku: str = SkuArgument,
    location: str | None = typer.Option(None, "--location", "-l", help="Only this location's movements."),
    limit: int = typer.Option(50, "--limit", help="Show at most this many movements."),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Continue after an earlier list (its next_cursor)."
    ),
    as_json: bool = JsonOption,
) -> None:
    movements, next_cursor = run(_history(sku, location, limit, cursor))
    if as_json:
        items = [m.model_dump(mode="json") for m in movements]
        print(json.dumps({"items": items, "next_cursor": next_cursor}, indent=2))
        return
    print(
        f"{'id':>10} {'created':<32} {'location':<16} {'reason':<8} {'on_hand':>9} {'reserved':>9}  reference"
    )
    for m in movements:
        print(
            f"{m.id:>10} {m.created_at.isoformat():<32} {m.location:<16} {m.reason:<8} "
            f"{m.delta_on_hand:>+9} {m.delta_reserved:>+9}  {m.reference}"
        )
    _more(next_cursor)


async def _low(below: int, limit: int, cursor: str | None) -> tuple[list[LowStock], str | None]:
    check_threshold(below)
    async with command_databases(check=False) as databases:

        async def page(at: str | None, size: int) -> LowStockPage:
            return await low_stock(databases, below, cursor=at, limit=size)

        return await collect(page, limit=limit, cursor=cursor)


def low_command(
    below: int = typer.Option(..., "--below", help="List rows with fewer units available than this."),
    limit: int = typer.Option(100, "--limit", help="Show at most this many rows."),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Continue after an earlier list (its next_cursor)."
    ),
    as_json: bool = JsonOption,
) -> None:
    rows, next_cursor = run(_low(below, limit, cursor))
    if as_json:
        print(json.dumps({"items": [r.model_dump() for r in rows], "next_cursor": next_cursor}, indent=2))
        return
    print(f"{'sku':<32} {'location':<16} {'on_hand':>12} {'reserved':>12} {'available':>12}")
    for r in rows:
        print(f"{r.sku:<32} {r.location:<16} {r.on_hand:>12} {r.reserved:>12} {r.available:>12}")
    _more(next_cursor)
