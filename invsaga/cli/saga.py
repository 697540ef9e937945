"""Commands that run or use the checkout saga: ``invsaga worker`` and ``invsaga checkout``."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

import typer

from invsaga.cli.errors import EXIT_CODES, run
from invsaga.cli.settings import load_command_settings
from invsaga.domain.checkout import (
    CheckoutLine,
    CheckoutRequest,
    CheckoutResult,
    CheckoutStatus,
    RejectReason,
)
from invsaga.domain.errors import InvalidInput, OutOfStock, ShardUnavailable
from invsaga.settings import load_settings

_LINE = re.compile(r"^(?P<sku>[^:@\s]+)(?:@(?P<location>[^:\s]+))?:(?P<quantity>-?\d+)$")

#: Long enough for the stock decision (the API waits 30 s), the charge and the confirmation.
DEFAULT_TIMEOUT_SECONDS = 60.0

#: A checkout that ended rejected exits as the matching error would; any other reason exits 1.
_RESULT_EXIT_CODES = {
    RejectReason.OUT_OF_STOCK: EXIT_CODES[OutOfStock],
    RejectReason.UNAVAILABLE: EXIT_CODES[ShardUnavailable],
}


def parse_line(text: str) -> CheckoutLine:
    """``SKU:QTY`` (allocated across the SKU's locations) or ``SKU@LOCATION:QTY``."""
    match = _LINE.match(text)
    if not match:
        raise InvalidInput(f"cannot read line {text!r}: write SKU:QTY or SKU@LOCATION:QTY")
    return CheckoutLine(sku=match["sku"], quantity=int(match["quantity"]), location=match["location"] or None)


def worker() -> None:
    """Run a checkout worker until SIGTERM or Ctrl-C, then drain in-flight activities and exit 0."""
    from workers.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(run_worker(load_settings()))


def checkout(
    lines: list[str] = typer.Argument(..., metavar="SKU:QTY...", help="Lines to buy, e.g. MUG-1:2."),
    order_id: str = typer.Option(None, "--order-id", help="Defaults to a new random id."),
    customer: str = typer.Option("cli-customer", "--customer"),
    payment_token: str = typer.Option("tok_success", "--payment-token"),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_SECONDS,
        "--timeout",
        metavar="SECONDS",
        help="Stop waiting for the result after this long and exit 69; the checkout carries on.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check out an order and wait for its result; exits 0 only when it is CONFIRMED."""
    from invsaga.client import CheckoutClient
    from invsaga.temporal.configured import connect_configured

    async def go() -> CheckoutResult:
        if not timeout > 0:
            raise InvalidInput(f"--timeout must be more than 0 seconds, got {timeout:g}")
        request = CheckoutRequest(
            order_id=order_id or f"cli-{uuid.uuid4().hex[:12]}",
            customer_id=customer,
            lines=[parse_line(text) for text in lines],
            payment_token=payment_token,
        )
        # A retrying step (a shard down, no worker) can keep the checkout going for many minutes. Like
        # the API's 503 after RESERVATION_TIMEOUT_SECONDS, give up waiting, not the checkout.
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                settings = load_command_settings()
                client = CheckoutClient(await connect_configured(settings), task_queue=settings.task_queue)
                return await client.checkout(request)
        # Our deadline cancels the update: the client reports it as Temporal not answering in time.
        except (TimeoutError, ShardUnavailable):
            if not deadline.expired():
                raise
            raise ShardUnavailable(
                f"no result within {timeout:g}s; the checkout may still be running under order id "
                f"{request.order_id}: run this again with --order-id {request.order_id} to follow it",
                database="temporal",
                order_id=request.order_id,
            ) from None

    result = run(go())
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print(_describe(result))
    if result.status is not CheckoutStatus.CONFIRMED:
        raise typer.Exit(_RESULT_EXIT_CODES.get(result.reason, 1) if result.reason else 1)


def _describe(result: CheckoutResult) -> str:
    parts = [f"order {result.order_id}: {result.status.value}"]
    if result.amount:
        parts.append(f"amount {result.amount}{_money_outcome(result)}")
    if result.reason:
        parts.append(f"reason {result.reason.value}")
    if result.detail:
        parts.append(result.detail)
    if result.status is CheckoutStatus.CONFIRMED:
        parts.extend(_where_from(result))
    for short in result.shortages:
        where = f"@{short.location}" if short.location else " (all locations)"
        parts.append(f"short {short.sku}{where}: wanted {short.requested}, {short.available} left")
    return "; ".join(parts)


def _where_from(result: CheckoutResult) -> list[str]:
    """Per SKU, the locations its units came from, e.g. ``MUG: 3 at main + 2 at east``."""
    by_sku: dict[str, list[str]] = {}
    for piece in result.allocations:
        by_sku.setdefault(piece.sku, []).append(f"{piece.quantity} at {piece.location}")
    return [f"{sku}: {' + '.join(pieces)}" for sku, pieces in by_sku.items()]


def _money_outcome(result: CheckoutResult) -> str:
    """An order that did not go through names its amount, but must not read as if it was paid."""
    if result.status is CheckoutStatus.CONFIRMED:
        return ""
    # A charge taken before the checkout failed is refunded by its compensation before it ends.
    return ", refunded" if result.charge_id else ", not charged"


def mount(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("checkout")(checkout)


__all__ = ["mount", "parse_line"]
