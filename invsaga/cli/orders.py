"""``invsaga order list|show|cancel``: the orders the core database records, and cancelling one.

``list`` and ``show`` read the core database (and, for ``show``, the shards holding the order's SKUs);
``cancel`` asks the order's checkout workflow to stop, through the same ``CheckoutClient.cancel`` as
``POST /v1/checkouts/{order_id}/cancel``, so the checkout decides whether it is still cancellable.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer

from invsaga.cli.errors import fail, run
from invsaga.cli.paging import collect
from invsaga.cli.settings import command_databases, load_command_settings
from invsaga.domain.checkout import CancelResult
from invsaga.domain.errors import InvalidInput
from invsaga.store.order_list import (
    ORDER_STATUSES,
    OrderDetail,
    OrderPage,
    OrderRecord,
    get_order,
    list_orders,
)

#: The longest cancel reason, as the API's cancel body allows.
MAX_REASON_LENGTH = 500

order_app = typer.Typer(help="List, show and cancel orders.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print the result as JSON.")


def mount(app: typer.Typer) -> None:
    app.add_typer(order_app, name="order")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"--since: cannot read {value!r} as a time; write e.g. 2026-12-01T09:30:00Z"
        ) from None


async def _list(
    customer: str | None, status: str | None, since: str | None, limit: int, cursor: str | None
) -> tuple[list[OrderRecord], str | None]:
    if status is not None and status.lower() not in ORDER_STATUSES:
        raise InvalidInput(f"--status must be one of {', '.join(ORDER_STATUSES)}, got {status!r}")
    after = _since(since)
    async with command_databases(check=False) as databases:

        async def page(at: str | None, size: int) -> OrderPage:
            return await list_orders(
                databases,
                customer_id=customer,
                status=status.lower() if status else None,
                since=after,
                cursor=at,
                limit=size,
            )

        return await collect(page, limit=limit, cursor=cursor)


def _order_json(order: OrderRecord) -> dict[str, Any]:
    return order.model_dump(mode="json")


@order_app.command("list", help="List orders, newest first.")
def list_command(
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's orders."),
    status: str | None = typer.Option(
        None, "--status", help=f"Only orders in this status: {', '.join(ORDER_STATUSES)}."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only orders created at or after this time (ISO 8601; UTC if no offset)."
    ),
    limit: int = typer.Option(50, "--limit", help="Show at most this many orders."),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Continue after an earlier list (its next_cursor)."
    ),
    as_json: bool = JsonOption,
) -> None:
    orders, next_cursor = run(_list(customer, status, since, limit, cursor))
    if as_json:
        print(json.dumps({"items": [_order_json(o) for o in orders], "next_cursor": next_cursor}, indent=2))
        return
    print(f"{'order':<28} {'customer':<20} {'status':<10} {'amount':>12} {'created':<25}")
    for o in orders:
        amount = f"{o.amount} {o.currency}"
        print(
            f"{o.order_id:<28} {o.customer_id:<20} {o.status:<10} {amount:>12} {o.created_at.isoformat():<25}"
        )
    if next_cursor:
        print(f"more orders follow: --cursor {next_cursor}")


async def _show(order_id: str) -> OrderDetail:
    async with command_databases(check=False) as databases:
        return await get_order(databases, order_id)


@order_app.command("show", help="Show an order: its lines, amount, status and the holds on the shards.")
def show_command(
    order_id: str = typer.Argument(metavar="ORDER_ID", help="The order id."),
    as_json: bool = JsonOption,
) -> None:
    order = run(_show(order_id))
    if as_json:
        print(json.dumps({**_order_json(order), "checkout": f"/v1/checkouts/{order.order_id}"}, indent=2))
        return
    reason = f" ({order.reason})" if order.reason else ""
    print(f"order {order.order_id}: {order.status}{reason}")
    print(f"  customer {order.customer_id}; amount {order.amount} {order.currency}")
    print(f"  created {order.created_at.isoformat()}; updated {order.updated_at.isoformat()}")
    print(f"  checkout /v1/checkouts/{order.order_id}")
    for line in order.lines:
        where = f"@{line.location}" if line.location else ""
        print(f"  line {line.sku}{where}: {line.quantity}")
    for short in order.shortages:
        where = f"@{short.location}" if short.location else ""
        print(f"  short {short.sku}{where}: {short.requested} requested, {short.available} available")
    for hold in order.holds:
        print(f"  hold {hold.sku}@{hold.location}: {hold.quantity} {hold.state}")
    if not order.holds:
        print("  no holds on the shards")


async def _cancel(order_id: str, reason: str) -> CancelResult:
    from invsaga.client import CheckoutClient
    from invsaga.temporal.configured import connect_configured

    if not reason.strip() or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"--reason must be 1 to {MAX_REASON_LENGTH} characters")
    settings = load_command_settings()
    client = CheckoutClient(await connect_configured(settings), task_queue=settings.task_queue)
    return await client.cancel(order_id, reason)


@order_app.command("cancel", help="Cancel an order's checkout: it releases the stock and refunds any charge.")
def cancel_command(
    order_id: str = typer.Argument(metavar="ORDER_ID", help="The order id."),
    reason: str = typer.Option("cancelled by request", "--reason", help="Why; recorded with the order."),
    as_json: bool = JsonOption,
) -> None:
    result = run(_cancel(order_id, reason))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    if not result.accepted:
        raise fail(f"order {result.order_id}: cancel not accepted; the checkout is {result.status.value}", 1)
    if result.status.terminal:  # cancelled before: the same answer as the first time
        print(f"order {result.order_id}: cancel accepted; the checkout is {result.status.value}")
        return
    status = result.status.value
    print(f"order {result.order_id}: cancel accepted; the checkout is {status} and ends CANCELLED")
